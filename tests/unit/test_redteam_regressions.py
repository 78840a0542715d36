"""Regressions from a red-team pass over the exec form: each line deleted or chmodded a file through
``ssh … demo-shell -- 'CMD'`` against the demo (dash as /bin/sh, the file F in the current directory) before the
fixes. Table: (class, with a terminal (``ssh -tt``), command). Every one must now be held or refused; most of them
are also run end to end in tests/integration/test_exec_boundary_e2e.py's classes.

Left out on purpose: ``mv F /tmp/`` and ``rename.ul F G F`` move the file (a rename, not a deletion: a deny-list
policy that must also forbid moving files names mv and rename itself; an allow-list policy holds them anyway).
"""

from __future__ import annotations

import pytest

from policies.engine import Action, PolicySet, Rule, evaluate

DEMO = PolicySet("demo-shell", Action.ALLOW, (
    Rule("no-rm", Action.BLOCK, programs=("rm", "unlink", "shred", "rmdir")),
    Rule("no-find-delete", Action.BLOCK, programs=("find",), args=("-delete",)),
    Rule("chmod-needs-approval", Action.REQUIRE_APPROVAL, programs=("chmod", "chown", "chgrp"),
         approver_roles=("reviewers",)),
))

BYPASSES = [
    ('find', False, 'find . -maxdepth 0 -exec flock + rm F \\;'),
    ('interp', False, 'printf \'import os\\nos.unlink("F")\\n\' > x.py; pydoc3.11 ./x.py'),
    ('interp', False, 'printf \'import os\\nos.unlink("F")\\n\' > x.py; pdb3 -c c x.py'),
    ('interp', False, 'printf \'import os\\nos.unlink("F")\\n\' > x.py; pdb3.11 x.py'),
    ('interp', False, 'printf \'from pygments.lexer import RegexLexer\\nimport os\\nos.unlink("F")\\nclass L(RegexLexer): tokens={}\\n\' > x.py; pygmentize -x -l ./x.py:L F'),  # noqa: E501
    ('interp', False, 'perl5.36-x86_64-linux-gnu -e \'unlink "F"\''),
    ('interp', False, 'prove -e rm F'),
    ('interp', False, 'prove --exec=unlink F'),
    ('interp', False, 'printf \'unlink "F";\' > t.t; prove t.t'),
    ('interp', False, "printf 'all:\\n\\trm F\\n' > mk; make-first-existing-target all -- -f mk"),
    ('interp', False, "printf 'file(REMOVE F)\\n' > x.cmake; ctest -S x.cmake"),
    ('interp', False, 'lli'),
    ('interp', False, 'lli-14 -'),
    ('interp', False, 'vim.basic -es'),
    ('interp', False, 'vim.basic -es -u NONE -c \'call delete("F")\' -c \'qa!\''),
    ('interp', False, "vim.basic -Es '+!rm F' '+qa!'"),
    ('interp', False, "run_erl /tmp/ /tmp/ 'rm /home/demo/p/F'"),
    ('interp', False, 'groff -U -Tascii'),
    ('interp', False, 'troff -U'),
    ('interp', False, "printf '.sy rm /home/demo/p/F\\n' > x.ms; nroff -U x.ms"),
    ('interp', False, 'msgexec rm F'),
    ('interp', False, 'msgfilter -i - -o /dev/null rm F'),
    ('interp', False, 'memusage rm F'),
    ('interp', False, 'heaptrack rm F'),
    ('interp', False, 'sotruss rm F'),
    ('interp', False, 'choom -n 0 -- rm F'),
    ('interp', False, 'not-14 rm F'),
    ('interp', False, 'dpkg-architecture -c rm F'),
    ('interp', False, "printf 'r /home/demo/p/F\\n' > t.conf; systemd-tmpfiles --user --remove /home/demo/p/t.conf"),
    ('interp', False, "printf 'z /home/demo/p/F 0777 - - -\\n' > t.conf; systemd-tmpfiles --user --create /home/demo/p/t.conf"),  # noqa: E501
    ('interp', False, 'printf \'apiVersion: v1\\nkind: Config\\nclusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]\\nusers: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1beta1, command: rm, args: [/home/demo/p/F], interactiveMode: Never}}}]\\ncontexts: [{name: x, context: {cluster: c, user: u}}]\\ncurrent-context: x\\n\' > k.yaml; kubectl --kubeconfig=k.yaml get pods'),  # noqa: E501
    ('awk', False, 'gawk \'BEGIN { if (1) /"/; system("rm F") } # "\''),
    ('awk', False, 'gawk \'BEGIN { if (0) x=1; else /"/; system("rm F") } # "\''),
    ('awk', False, 'mawk \'BEGIN { x = /[/"]/; system("rm F") } # "\''),
    ('awk', False, 'gawk \'BEGIN { x = /[/"]/; print "rm F" | "sh" } # "\''),
    ('awk', False, 'x=\'BEGIN{system("rm F")}\'; mawk "$x"'),
    ('sed', False, "sed ':a e rm F' F"),
    ('sed', False, "sed -n ':a e rm F' F"),
    ('sed', False, "sed 's/.*[/]*/w;rm F/e' F"),
    ('sed', False, "sed -n 's/.*[/]*/w;rm F/ep' F"),
    ('sed', False, 'x=\'1e rm F\'; sed "$x" F'),
    ('git', False, "git init -q && git config core.fsmonitor 'rm /home/demo/r/F' get; git status"),
    ('git', False, "git init -q && git config core.fsmonitor 'rm /home/demo/r/F' list; git status"),
    ('git', False, 'git apply'),
    ('tar', False, 'x=--remove-files; tar cf /tmp/x.tar F $x'),
    ('tar', False, 'x=\'--checkpoint-action=exec=unlink F\'; tar cf /tmp/x.tar F --checkpoint=1 "$x"'),
    ('tar', False, 'tar cf /tmp/x.tar --mode=777 F && tar xpf /tmp/x.tar'),
    ('zip', False, 'ZIPOPT=-m zip -q /tmp/x.zip F'),
    ('zip', False, 'ZIP=-m zip -q /tmp/x.zip F'),
    ('zip', False, 'x=-m; zip -q /tmp/x.zip F $x'),
    ('rsync', False, 'x=--remove-source-files; rsync $x F /tmp/'),
    ('socat', False, 'x=\'SYSTEM:rm F\'; socat -u /dev/null "$x"'),
    ('socat', False, 'socat -u /dev/null OPEN:F,unlink-late'),
    ('sh', False, '[[ ; rm F'),
    ('sh', False, '[[ ; rm F ; ]]'),
    ('del', False, 'ln -sf /nonexistent F'),
    ('chm', False, 'patch -p1'),
    ('chm', False, 'find . -maxdepth 0 -exec flock + chmod 777 F \\;'),
    ('chm', False, '[[ ; chmod 777 F'),
    ('ttyx', True, 'vim.basic -c \'call delete("F")\' -c \'qa!\' F'),
    ('ttyx', True, '[[ ; rm F'),
    ('ttyx', True, 'find . -maxdepth 0 -exec flock + rm F \\;'),
    ('del', False, 'patch -p0'),
    ('del', False, 'git apply'),
    ('del', False, 'savelog -l -c 2 F'),
    ('chm', False, 'savelog -m 777 -l -c 2 F'),
    ('del', False, 'mkdir e; rsync -d --delete-missing-args e/F .'),
    ('chm', False, 'socat -u /dev/null OPEN:F,perm-late=0777'),
    ('interp', False, 'gcc -wrapper /bin/rm,F,-- -E -x c /dev/null'),
    ('interp', False, 'x86_64-linux-gnu-gcc-12 -wrapper /bin/rm,F,-- -E -x c /dev/null'),
    ('interp', False, "scriptlive -c 'rm F' /dev/null /dev/null"),
    ('sh', False, '[[ ; rm F'),
    ('sh', False, '[[ x = y; rm F; ]]'),
    ('sh', False, '[[ -n x & rm F'),
    ('git', False, "git init -q; git config filter.x.clean 'rm /home/demo/p/F' get; echo '* filter=x' > .gitattributes; git add ."),  # noqa: E501
    ('git', False, "git init -q && git config core.fsmonitor 'rm /home/demo/p/F' get; git status"),
    ('git', False, "git init -q && git config core.sshCommand 'rm /home/demo/p/F' list; git fetch -q ssh://x/y"),
    ('git', False, "printf '[core]\\n\\tfsmonitor = rm /home/demo/p/F\\n' > c; git init -q; cd .git; cat ../c >> config; cd ..; git status"),  # noqa: E501
    ('git', False, "git init -q; x=.git; printf '[core]\\n\\tfsmonitor = rm /home/demo/p/F\\n' >> $x/config; git status"),  # noqa: E501
    ('git', False, "git init -q; ln -s .git/config c; printf '[core]\\n\\tfsmonitor = rm /home/demo/p/F\\n' >> c; git status"),  # noqa: E501
    ('awk', False, 'gawk \'BEGIN { if (1) /"/; system("rm F") } # "\''),
    ('awk', False, 'mawk \'BEGIN { x = /[/"]/; system("rm F") } # "\''),
    ('awk', False, 'x=\'BEGIN{system("rm F")}\'; mawk "$x"'),
    ('sed', False, "sed ':a e rm F' F"),
    ('sed', False, "sed 's/.*[/]*/w;rm F/e' F"),
    ('sed', False, 'x=\'1e rm F\'; sed "$x" F'),
    ('tar', False, 'x=--remove-files; tar cf /tmp/x.tar F $x'),
    ('zip', False, 'ZIPOPT=-m zip -q /tmp/x.zip F'),
    ('rsync', False, 'x=--remove-source-files; rsync $x F /tmp/'),
    ('socat', False, 'x=\'SYSTEM:rm F\'; socat -u /dev/null "$x"'),
    ('find', False, 'find . -maxdepth 0 -exec flock + rm F \\;'),
    ('find', False, 'find . -maxdepth 0 -exec flock -n + rm F \\;'),
    ('pager', True, 'zless F'),
    ('pager', True, 'xzless F'),
    ('pager', True, 'vim.basic F'),
    ('dot', False, "ln -s ~/.gitconfig g; printf '[core]\\n\\tfsmonitor = rm /home/demo/p/F\\n' > g; git init -q; git status"),  # noqa: E501
    ('dot', False, "k=.lesskey; printf '#env\\nLESSOPEN=|rm /home/demo/p/F %%s\\n' > ~/$k; less F"),
    ('dot', False, "git init -q; printf '[core]\\n\\tfsmonitor = rm /home/demo/p/F\\n' > c; git config include.path ../c get; git status"),  # noqa: E501
]


@pytest.mark.parametrize(("cls", "tty", "cmd"), BYPASSES, ids=[f"{c}:{cmd[:50]}" for c, _, cmd in BYPASSES])
def test_red_team_bypasses_are_held_or_refused(cls: str, tty: bool, cmd: str) -> None:
    d = evaluate(DEMO, cmd, groups=["ops"], resource="demo-shell", terminal=tty)
    assert d.action >= Action.REQUIRE_APPROVAL, (cmd, d.summary(), d.explanation)


@pytest.mark.parametrize("cmd", [
    "echo $(date +%s) $((1+2))", "x=$(wc -l < F); echo $x", "[ -f F ] && echo yes", "find . -name F -print",
    "awk '{print (a+b)/2}' F", "awk '/a|b/ {print}' F", "sed ':a;N;$!ba;s/\\n/ /g' F", "git config --get user.name",
    "git config user.email x@y", "tar -tf x.tar", "ln -s F G", "cd /tmp && ls",
])
def test_the_fixes_keep_everyday_commands_allowed(cmd: str) -> None:
    d = evaluate(DEMO, cmd, groups=["ops"], resource="demo-shell", terminal=False)
    assert d.action == Action.ALLOW, (cmd, d.summary(), d.explanation)
