"""File transfers judged by the policy: transfer rules and the shell equivalent (strictest wins), the exec form's
transfer programs read from the command lines their real clients send, and the config's transfer rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.config import ConfigError, load_config
from bastion.config.rules import PolicyModel, policy_set
from policies.engine import Action, PolicySet, evaluate
from policies.transfer import (
    OPS,
    Transfer,
    TransferParseError,
    evaluate_transfer,
    exec_transfers,
    is_transfer_command,
    path_matches,
    resolve_home,
)
from tests.unit.test_config import good, write
from tests.unit.test_config import keys as keys  # noqa: F401  (the fixture)

# the demo's demo-shell policy (bastion/demo/run.py: NO_DELETION, chmod-needs-approval) plus transfer rules
POLICY = """
default: allow
rules:
  - {name: no-rm, programs: [rm, unlink, shred, rmdir], action: block, reason: deleting files is not allowed}
  - {name: no-find-delete, programs: [find], args: [-delete], action: block}
  - {name: chmod-needs-approval, programs: [chmod, chown, chgrp], action: require_approval,
     approvers: {roles: [reviewers], count: 1}, timeout: 900}
  - {name: etc-uploads, transfer: [upload, rename, symlink], paths: [/etc/**], action: require_approval,
     approvers: {roles: [reviewers], count: 2}}
  - {name: big-downloads, transfer: [download], max_bytes: 1000000, action: require_approval}
  - {name: no-ssh-keys, transfer: [upload, download], paths: ["*/.ssh/**"], action: block}
  - {name: data-links, transfer: [symlink], paths: [/data/**], action: warn}
  - {name: k8s-metrics, paths: [/metrics], action: block}
"""
STRICT = """
default: require_approval
rules:
  - {name: no-rm, programs: [rm, unlink, shred, rmdir], action: block}
  - {name: read-only-tools, programs: [ls, cat, mkdir, touch], action: allow}
  - {name: no-remove, transfer: [remove], action: block}
"""


def policy(text: str = POLICY) -> PolicySet:
    return policy_set("p", PolicyModel.model_validate(yaml.safe_load(text)))


def judge(t: Transfer, text: str = POLICY) -> tuple[str, str | None]:
    d = evaluate_transfer(policy(text), t, groups=["ops"], resource="web1")
    return d.action.label, d.rule


@pytest.mark.parametrize(("t", "action", "rule"), [
    (Transfer("remove", "/srv/x"), "block", "no-rm"),                 # no transfer rule: the shell rule holds
    (Transfer("rmdir", "/tmp/d"), "block", "no-rm"),
    (Transfer("rename", "/etc/x", "/tmp/x"), "require_approval", "etc-uploads"),
    # mv writing into /etc is opaque to the shell engine (configuration others run): the strictest action
    (Transfer("rename", "/tmp/x", "/etc/x"), "block", "no-rm"),
    (Transfer("rename", "/tmp/x", "/tmp/y"), "allow", None),
    (Transfer("symlink", "/tmp/l", "/etc/shadow"), "block", "no-rm"),          # ln on /etc: opaque, as above
    (Transfer("symlink", "/srv/l", "../data/x"), "warn", "data-links"),        # the target resolved
    (Transfer("chmod", "/tmp/x", detail="mode 0755"), "require_approval", "chmod-needs-approval"),
    (Transfer("chmod", "/tmp/x", detail="owner 0:0"), "require_approval", "chmod-needs-approval"),
    (Transfer("chmod", "/tmp/x", detail="times"), "allow", None),
    (Transfer("chmod", "/tmp/x", detail="size 0, mode 0600"), "require_approval", "chmod-needs-approval"),
    (Transfer("chmod", "/tmp/x"), "require_approval", "chmod-needs-approval"),
    (Transfer("upload", "/etc"), "require_approval", "etc-uploads"),
    (Transfer("upload", "/etc/ssh/sshd_config", size=10), "require_approval", "etc-uploads"),
    (Transfer("upload", "/etcetera/x"), "allow", None),
    (Transfer("upload", "/tmp/x", size=10 ** 9), "allow", None),
    (Transfer("upload", "/root/.ssh/authorized_keys"), "block", "no-ssh-keys"),
    (Transfer("download", "/tmp/x"), "allow", None),
    (Transfer("download", "/tmp/x", size=1_000_000), "allow", None),
    (Transfer("download", "/tmp/x", size=1_000_001), "require_approval", "big-downloads"),
    (Transfer("mkdir", "/tmp/new"), "allow", None),
    (Transfer("mkdir", "/metrics"), "allow", None),                   # a Kubernetes paths rule is no transfer rule
    (Transfer("delete", "/tmp/x"), "block", None),                    # unknown operation
    (Transfer("upload", "tmp/x"), "block", None),                     # not absolute
    (Transfer("upload", "~/x"), "block", None),                       # home not resolved
    (Transfer("upload", "/tmp/../etc/x"), "block", None),             # not normalized
    (Transfer("rename", "/tmp/x", "y"), "block", None),
])
def test_transfers_judged(t: Transfer, action: str, rule: str | None) -> None:
    assert judge(t) == (action, rule)


@pytest.mark.parametrize(("t", "action", "rule"), [
    (Transfer("remove", "/tmp/x"), "block", "no-remove"),             # tie: the transfer rule names itself
    (Transfer("mkdir", "/tmp/x"), "allow", "read-only-tools"),
    (Transfer("upload", "/tmp/x"), "require_approval", None),          # scp is not listed: the default holds
    (Transfer("chmod", "/tmp/x", detail="times"), "allow", "read-only-tools"),
])
def test_allow_list_policy_holds_what_it_does_not_list(t: Transfer, action: str, rule: str | None) -> None:
    assert judge(t, STRICT) == (action, rule)


def test_decision_carries_the_rule_and_both_judgements() -> None:
    d = evaluate_transfer(policy(), Transfer("upload", "/etc/motd", size=1234), groups=["ops"], resource="web1")
    assert d.text == "upload /etc/motd (1.2 kB)" and d.approvals == 2 and d.approver_roles == ("reviewers",)
    assert any("scp -t -- /etc/motd" in w for w in d.explanation)
    d = evaluate_transfer(policy(), Transfer("remove", "/srv/x"), groups=["ops"], resource="web1")
    assert "deleting files is not allowed" in d.reason
    d = evaluate_transfer(policy(), Transfer("op", "/x"), groups=[], resource="r")
    assert d.reason.startswith("the transfer cannot be judged (")


@pytest.mark.parametrize(("t", "text", "shell"), [
    (Transfer("upload", "/etc/motd", size=1200), "upload /etc/motd (1.2 kB)", "scp -t -- /etc/motd"),
    (Transfer("download", "/a b", size=3), "download /a b (3 B)", "scp -f -- '/a b'"),
    (Transfer("remove", "/srv/x"), "remove /srv/x", "rm -- /srv/x"),
    (Transfer("rename", "/a", "/b"), "rename /a -> /b", "mv -- /a /b"),
    (Transfer("mkdir", "/d"), "mkdir /d", "mkdir -- /d"),
    (Transfer("rmdir", "/d"), "rmdir /d", "rmdir -- /d"),
    (Transfer("symlink", "/l", "/t"), "symlink /l -> /t", "ln -s -- /t /l"),
    (Transfer("symlink", "/l", "/t", detail="hard link"), "symlink /l -> /t (hard link)", "ln -- /t /l"),
    (Transfer("chmod", "/x", detail="mode 0755"), "chmod /x (mode 0755)", "chmod 0755 -- /x"),
    (Transfer("chmod", "/x", detail="mode 0644, owner 0:0, size 0, times"),
     "chmod /x (mode 0644, owner 0:0, size 0, times)",
     "chmod 0644 -- /x ; chown 0:0 -- /x ; truncate -s 0 -- /x ; touch -- /x"),
])
def test_describe_and_shell_equivalent(t: Transfer, text: str, shell: str) -> None:
    assert (t.describe(), t.shell_equivalent()) == (text, shell)


def test_globs() -> None:
    assert all(path_matches("/etc/**", p) for p in ("/etc", "/etc/passwd", "/etc/ssh/sshd_config"))
    assert not path_matches("/etc/**", "/etcetera") and path_matches("/**", "/")
    assert path_matches("/home/*/.ssh/**", "/home/a/.ssh") and not path_matches("/srv/*.git", "/srv/x")


# What the real clients send (captured with -e / -S / GIT_SSH_COMMAND pointing at a script printing its argv:
# rsync 3.2, OpenSSH 9.2 scp -O, git 2.39)
REAL = [
    ("rsync --server -vlogDtpre.iLsfxCIvu . /dst/", [("upload", "/dst")]),
    ("rsync --server -vlogDtpre.iLsfxCIvu . dst", [("upload", "~/dst")]),
    ("rsync --server -vlogDtpre.iLsfxCIvu --delete . /srv/www/", [("upload", "/srv/www"), ("remove", "/srv/www")]),
    ("rsync --server -vlogDtprze.iLsfxCIvu --inplace . /srv/www/", [("upload", "/srv/www")]),
    ("rsync --server --sender -vlogDtpre.iLsfxCIvu . /etc/hosts", [("download", "/etc/hosts")]),
    ("rsync --server --sender -vlogDtpre.iLsfxCIvu --remove-source-files . /var/log/app.log",
     [("download", "/var/log/app.log"), ("remove", "/var/log/app.log")]),
    ("rsync --server --sender -logDtpre.iLsfxCIvu . /etc/hosts /etc/passwd",
     [("download", "/etc/hosts"), ("download", "/etc/passwd")]),
    ("rsync --server -vltre.iLsfxCIvu --delete-after . backup/", [("upload", "~/backup"), ("remove", "~/backup")]),
    ("rsync --server -logDtprce.iLsfxCIvu --timeout=30 --bwlimit=1000 . /tmp/x", [("upload", "/tmp/x")]),
    ("rsync --server -blogDtpre.iLsfxCIvu --suffix=.bak --max-size=10485760 --safe-links --numeric-ids . /tmp/x",
     [("upload", "/tmp/x")]),
    ("rsync --server -blogDtpre.iLsfxCIvu --backup-dir /tmp/old . /tmp/x", [("upload", "/tmp/x"),
                                                                           ("upload", "/tmp/old")]),
    ("rsync --server -logDtpre.iLsfxCIvu --delete-excluded . /tmp/x", [("upload", "/tmp/x"), ("remove", "/tmp/x")]),
    ("rsync --server -logDtpre.iLsfxCIvu --compress-level=3 --checksum-choice=xxh64 . /tmp/x",
     [("upload", "/tmp/x")]),
    ("rsync --server -logDtre.iLsfxCIvu --size-only --ignore-existing --existing . /tmp/x", [("upload", "/tmp/x")]),
    ("rsync --server -logDtpre.iLsfxCIvu --log-format=X . /tmp/x", [("upload", "/tmp/x")]),
    ("rsync --server -lHogDtpre.iLsfxCIvu . /tmp/with\\ space/", [("upload", "/tmp/with space")]),
    ("scp -t /etc/motd", [("upload", "/etc/motd")]),
    ("scp -t .", [("upload", "~")]),
    ("scp -r -p -t backup/dir", [("upload", "~/backup/dir")]),
    ("scp -f /etc/hosts", [("download", "/etc/hosts")]),
    ("scp -r -p -f /srv/a b", [("download", "/srv/a"), ("download", "~/b")]),  # the remote shell splits it too
    ("scp -d -t /tmp/", [("upload", "/tmp")]),
    ("scp -v -t /tmp/x", [("upload", "/tmp/x")]),
    ("scp -t ~/notes.txt", [("upload", "~/notes.txt")]),
    ("scp -t -- /srv/x", [("upload", "/srv/x")]),
    ("git-upload-pack '/srv/repo.git'", [("download", "/srv/repo.git")]),
    ("git-upload-pack 'repo.git'", [("download", "~/repo.git")]),
    ("git-upload-pack '~/repo.git'", [("download", "~/repo.git")]),
    ("git-upload-archive '/srv/repo.git'", [("download", "/srv/repo.git")]),
    ("git-receive-pack '/srv/repo.git'", [("upload", "/srv/repo.git")]),
    ("git upload-pack --strict --timeout=5 '/srv/repo.git'", [("download", "/srv/repo.git")]),
    ("/usr/bin/git-receive-pack /srv/r", [("upload", "/srv/r")]),
]


@pytest.mark.parametrize(("command", "expected"), REAL)
def test_real_client_command_lines(command: str, expected: list[tuple[str, str]]) -> None:
    assert [(t.op, t.path) for t in exec_transfers(command) or []] == expected
    assert is_transfer_command(command)


@pytest.mark.parametrize("command", [
    "ls -la", "grep scp /var/log/x", "git log --grep upload-pack", "cat rsyncd.conf", "git --version",
    "echo hi | wc -l",
    # the same programs used on the target for something else: ordinary commands, judged by the shell engine
    "rsync --version", "rsync -a /srv/a/ /srv/b/", "rsync -r . /x", "scp -r x", "git -C /srv/r log",
    # a line the shell engine cannot see through: judged there, as strictly as the policy allows
    "sh -c 'scp -t /etc'",
])
def test_not_a_transfer(command: str) -> None:
    assert exec_transfers(command) is None and not is_transfer_command(command)


HOSTILE = [
    "rsync --server --rsync-path=x . /d", "rsync --server -vlogDtpre.iLsfxCIvu --rsh=sh . /d",
    "rsync --server -e sh . /d", "rsync --server -e.Lsfx --log-file=/tmp/x . d", "rsync --server --daemon . d",
    "rsync --server --config=/x . d", "rsync --server -logDtpre.iLsfx --temp-dir /tmp/t . /tmp/x",
    "rsync --server -logDtpre.iLsfx --link-dest /x . /tmp/x", "rsync --server -logDtpre.iLsfx --partial-dir .p . /x",
    "rsync --server -logDtpre.iLsfx --files-from=/etc/x . /x", "rsync --server -r --write-batch=/tmp/b . /x",
    "rsync --server -r --filter='merge /etc/x' . /x", "rsync --server -r -f'. /etc/x' . /x",
    "rsync --server -r --exclude-from=/etc/shadow . /x", "rsync --server -rT/tmp . /x",
    "rsync --server -slogDtpre.iLsfxCIvu", "rsync --server --sender -rLe.iLsfx . /x", "rsync --server -r . a b",
    "rsync --server -r --frobnicate . /x", "rsync --server -r . /x --rsync-path=y",
    "rsync --server --sender -r --copy-unsafe-links . /x", "rsync --server -r --suffix=/../../etc/x . /x",
    "scp -S evil -t x", "scp -t x; rm -rf /", "scp -t x && id", "scp -t x > /etc/passwd", "scp -t $HOME",
    "scp -f /var/log/*.log", "scp -t `id`", "scp -t \"$(id)\"", "scp -o ProxyCommand=x -t y", "scp -3 -t x",
    "scp -F cfg -f x", "scp -i key -t x", "scp -t", "scp -t a b", "scp -t -f x", "scp -t ../../etc",
    "scp -t /srv/../etc", "scp -t '~root/.ssh'", "scp --help -t x", "env scp -t /etc", "sudo scp -t /etc",
    "nice -n5 rsync --server . /x", "/tmp/scp -t x", "./scp -t x",
    "git-upload-pack --upload-pack=x /r", "git-upload-pack '~root/x'", "git-upload-pack", "git-upload-pack a b",
    "git -c core.sshCommand=x upload-pack /r", "git upload-pack -c x /r", "git-upload-archive --remote=x /r",
    "sftp-server", "/usr/lib/openssh/sftp-server", "internal-sftp", "/usr/lib/openssh/sftp-server -d /",
    "scp -t 'unterminated",
]


@pytest.mark.parametrize("command", HOSTILE)
def test_hostile_command_lines_are_refused(command: str) -> None:
    with pytest.raises(TransferParseError):
        exec_transfers(command)


FORBIDDEN = ["--rsync-path=x", "-e sh", "--rsh=x", "--log-file=/tmp/l", "--temp-dir=/t", "--link-dest=/l",
             "--files-from=/f", "--daemon", "--config=/c", "-T/t", "--read-batch=b", "--copy-dest=/c",
             "--compare-dest=/c", "--partial-dir=p", "--include-from=/i", "--filter=merge /m", "--unknown-thing"]
HARMLESS = ["-vlogDtpre.iLsfxCIvu", "--delete", "--partial", "--inplace", "--timeout=5", "--bwlimit=10",
            "--numeric-ids", "--safe-links", "--size-only", "--no-implied-dirs", "--ignore-times", "--existing",
            "--compress-level=3", "--max-size=100", "--suffix=.bak"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(HARMLESS), max_size=6), st.sampled_from(FORBIDDEN), st.integers(0, 8),
       st.booleans())
def test_a_forbidden_rsync_option_is_never_passed_over(harmless: list[str], bad: str, at: int,
                                                       sender: bool) -> None:
    opts = list(harmless)
    opts.insert(min(at, len(opts)), bad)
    command = "rsync --server " + ("--sender " if sender else "") + " ".join(opts) + " . /srv/x"
    with pytest.raises(TransferParseError):
        exec_transfers(command)


SCP_BAD = ["-S", "evil", "-o", "-F", "-i", "-3", "-P", "-l", "-J", ";", "|", "&&", "$(id)", "`id`", ">", "--x"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["-v", "-r", "-p", "-d", "-q", "-rp", "--"]), max_size=4),
       st.sampled_from(["-t", "-f"]), st.sampled_from(SCP_BAD), st.integers(0, 6))
def test_scp_never_accepts_a_forbidden_token(opts: list[str], mode: str, bad: str, at: int) -> None:
    words = [*opts, mode, "/srv/x"]
    words.insert(min(at, len(words)), bad)
    try:
        out = exec_transfers("scp " + " ".join(words))
    except TransferParseError:
        return
    # accepted: only when the token is an operand after "--" or a plain word taken as a path (never an option)
    assert out is not None and not bad.startswith("-") or "--" in words[:words.index(bad)]
    assert all(t.path.startswith(("/", "~")) for t in out or [])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["scp -t", "scp -f", "git-upload-pack", "git-receive-pack", "rsync --server -r .",
                        "rsync --server --sender -r ."]),
       st.lists(st.sampled_from(["a", "b", "..", ".", "", "~", "etc", "x y"]), min_size=1, max_size=6),
       st.booleans())
def test_returned_paths_are_absolute_or_home_and_never_climb(prefix: str, parts: list[str], absolute: bool) -> None:
    path = ("/" if absolute else "") + "/".join(parts)
    try:
        out = exec_transfers(f"{prefix} '{path}'")
    except TransferParseError:
        return
    for t in out or []:
        assert t.path.startswith(("/", "~")) and ".." not in t.path.split("/")
        assert not t.path.startswith("~") or t.path == "~" or t.path.startswith("~/")


def test_resolve_home() -> None:
    t = resolve_home(Transfer("upload", "~/x"), "/home/deploy")
    assert t.path == "/home/deploy/x" and resolve_home(Transfer("upload", "~"), "/root").path == "/root"
    assert judge(resolve_home(Transfer("upload", "~/.ssh/authorized_keys"), "/root")) == ("block", "no-ssh-keys")


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(OPS), st.sampled_from(["/etc/x", "/tmp/x", "/root/.ssh/k", "/srv/a b", "/metrics"]),
       st.sampled_from(["", "/etc/y", "/tmp/y", "rel"]), st.one_of(st.none(), st.integers(0, 10 ** 7)),
       st.sampled_from(["", "mode 0755", "owner 0:0", "times", "size 3", "hard link"]),
       st.sampled_from([POLICY, STRICT]))
def test_never_weaker_than_the_shell_equivalent(op: str, path: str, other: str, size: int | None, detail: str,
                                                text: str) -> None:
    p = policy(text)
    t = Transfer(op, path, other or ("/tmp/o" if op in ("rename", "symlink") else ""), size, detail)
    d = evaluate_transfer(p, t, groups=["ops"], resource="web1")
    shell = evaluate(p, t.shell_equivalent(), groups=["ops"], resource="web1", terminal=False)
    assert d.action >= shell.action
    assert d.text == t.describe()


def test_kinds_of_rules() -> None:
    rules = {r.name: r for r in policy().rules}
    assert rules["etc-uploads"].for_transfer and not rules["etc-uploads"].for_kube
    assert not rules["etc-uploads"].for_shell and not rules["etc-uploads"].for_sql
    assert rules["k8s-metrics"].for_kube and not rules["k8s-metrics"].for_transfer
    assert not rules["no-rm"].for_transfer and rules["big-downloads"].max_bytes == 1_000_000
    assert rules["big-downloads"].action == Action.REQUIRE_APPROVAL


def config_with(keys: dict[str, str], rules: str) -> str:
    return good(keys) + "policies:\n  p:\n    default: allow\n    rules:\n" + rules


def test_transfer_rules_load(tmp_path: Path, keys: dict[str, str]) -> None:  # noqa: F811
    cfg = load_config(write(tmp_path, config_with(keys, (
        "      - {name: t, transfer: [upload, download], paths: [/etc/**], max_bytes: 10, action: block}\n"
        "      - {name: k, paths: [/metrics], action: block}\n"))))
    t, k = cfg.policies["p"].rules
    assert (t.transfer, t.paths, t.max_bytes) == (("upload", "download"), ("/etc/**",), 10)
    assert t.for_transfer and not t.for_kube and k.for_kube and k.transfer == ()


@pytest.mark.parametrize(("rule", "needle"), [
    ("{name: r, transfer: [remove], max_bytes: 5, action: block}", "max_bytes applies to transfer: [upload, download]"),
    ("{name: r, max_bytes: 5, action: block}", "max_bytes applies to transfer"),
    ("{name: r, transfer: [upload], max_bytes: 5, action: allow}", "max_bytes needs action block or require_approval"),
    ("{name: r, transfer: [upload], programs: [scp], action: block}", "mixes shell (programs/args) and transfer"),
    ("{name: r, transfer: [upload], statements: [delete], action: block}", "mixes SQL"),
    ("{name: r, transfer: [upload], verbs: [get], action: block}", "mixes Kubernetes"),
    ("{name: r, transfer: [upload], paths: [etc/x], action: block}", "globs on absolute file paths"),
    ("{name: r, transfer: [copy], action: block}", "transfer"),
    ("{name: r, transfer: [upload], max_bytes: -1, action: block}", "max_bytes"),
])
def test_transfer_rule_errors(tmp_path: Path, keys: dict[str, str], rule: str, needle: str) -> None:  # noqa: F811
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, config_with(keys, f"      - {rule}\n")))
    assert needle in str(e.value) and "bastion.yaml:" in str(e.value), str(e.value)
