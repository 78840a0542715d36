"""The demo's config, as text: its users, resources and policies (written to ``state/bastion.yaml`` by
:func:`bastion.demo.run.prepare` on every start; edit a copy for real use)."""

from __future__ import annotations

DEMO_USERS = {"alice": ["ops"], "bob": ["reviewers"], "carol": ["auditors"]}


def yaml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


DEMO_DB = """\
  demo-db:
    kind: postgres
    description: "Demo database (local PostgreSQL started by the demo): customers, ssn masked"
    host: 127.0.0.1
    port: {port}
    database: demo
    user: demo_app
    credential: {{password_file: secrets/demo-db.pw}}
    tls: {{mode: disable}}
    policy: demo-db
    restrict: true
    masking:
      - {{table: customers, column: ssn, style: keep_last, keep: 4}}
"""
DEMO_DB_POLICY = """\
  demo-db:
    default: allow
    rules:
      - name: no-server-files
        traits: [copy_program, copy_file, dangerous_function]
        action: block
        reason: server-side files and programs are off limits
      - name: code-needs-approval
        traits: [plants_code, privilege]
        action: require_approval
        approvers: {roles: [reviewers], count: 1}
        reason: code that runs later (triggers, rules, functions, policies) and privileges need a reviewer's approval
      - name: no-unbounded-writes
        statements: [delete, update, insert, merge]
        max_rows: 1
        action: require_approval
        approvers: {roles: [reviewers], count: 1}
        reason: a write that touches more than one row needs a reviewer's approval
      - name: ddl-needs-approval
        statements: [drop, truncate, alter]
        action: require_approval
        approvers: {roles: [reviewers], count: 1}
        reason: schema changes need a reviewer's approval
"""


DEMO_SHELL = """\
  demo-shell:
    kind: ssh
    description: "Demo host: a shell in a sandbox on this machine (deny-list policy), via an embedded SSH server"
    host: 127.0.0.1
    port: {port}
    user: demo
    policy: demo-shell
    credential:
      private_key_file: keys/demo-target-credential
    host_key: {host_key}
    transfers: {{archive: true}}     # the contents of files sent to and from it are kept (bastion audit archive)
    enforce: guard                 # every program a session executes is judged on the target (docs/guard.md)
    guard_path: /opt/bastion/bastion-guard
  demo-shell-strict:
    kind: ssh
    description: "The same sandboxed shell with an allow-list policy: anything not listed waits for a reviewer"
    host: 127.0.0.1
    port: {port}
    user: demo
    policy: demo-shell-strict
    credential:
      private_key_file: keys/demo-target-credential
    host_key: {host_key}
  demo-shell-moderated:
    kind: ssh
    description: "The demo shell under four eyes: it opens when a reviewer watches (F4), pauses when none does"
    host: 127.0.0.1
    port: {port}
    user: demo
    policy: demo-shell
    credential:
      private_key_file: keys/demo-target-credential
    host_key: {host_key}
    enforce: guard
    guard_path: /opt/bastion/bastion-guard
    moderators: {{roles: [reviewers], count: 1}}
    moderator_grace: 30             # seconds of input paused without a moderator, then the session ends
"""
NO_DELETION = """\
      - name: no-rm
        programs: [rm, unlink, shred, rmdir]
        action: block
        reason: deleting files is not allowed on {name}
      - name: no-find-delete
        programs: [find]
        args: [-delete]
        action: block
        reason: deleting files is not allowed on {name}
"""
# The allow-list: everyday programs that read, or make a file or a directory, and run nothing they are given
# (pagers, editors, env, xargs, interpreters are left out; what find -exec runs is judged on its own); every other
# program waits for a reviewer.
STRICT_ALLOWED = ("ls", "cat", "head", "tail", "grep", "wc", "sort", "uniq", "cut", "tr", "find", "echo", "printf",
                  "pwd", "cd", "id", "whoami", "date", "uname", "df", "du", "stat", "file", "diff", "basename",
                  "dirname", "realpath", "readlink", "true", "false", "test", "touch", "mkdir")
DEMO_SHELL_POLICIES = """\
  demo-shell:
    default: allow
    rules:
{no_deletion_shell}\
      - name: no-escape
        programs: [systemd-run, at, batch, crontab]
        action: block
        reason: these start programs outside the session, where the guard cannot judge them
      - name: chmod-needs-approval
        programs: [chmod, chown, chgrp]
        action: require_approval
        approvers: {{roles: [reviewers], count: 1}}
        timeout: 900
        reason: permission changes need a reviewer's approval
      - name: config-uploads-need-approval
        transfer: [upload, rename, symlink, mkdir, chmod]
        paths: ["/etc/**", "/home/demo/.ssh/**"]
        action: require_approval
        approvers: {{roles: [reviewers], count: 1}}
        timeout: 900
        reason: files under /etc and ~/.ssh change how the host runs and who logs in
  demo-shell-strict:
    default: require_approval   # what is not listed below waits for one reviewer
    rules:
{no_deletion_strict}\
      - name: sort-runs-programs
        programs: [sort]
        args: ["--co*"]         # --compress-program=PROG (and its abbreviations) runs PROG
        action: require_approval
        approvers: {{roles: [reviewers], count: 1}}
        reason: sort --compress-program runs a program
      - name: read-only-tools
        programs: [{allowed}]
        action: allow
""".format(no_deletion_shell=NO_DELETION.format(name="demo-shell"),
           no_deletion_strict=NO_DELETION.format(name="demo-shell-strict"),
           allowed=",\n                   ".join(", ".join(yaml_str(p) for p in STRICT_ALLOWED[i:i + 12])
                                                   for i in range(0, len(STRICT_ALLOWED), 12)))
