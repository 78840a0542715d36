"""The judgement of one exec reported by bastion-guard (policies/execs.py): the rules of typed lines, applied to
the program as the kernel runs it, under every name it has; unknown programs and the dynamic loader refused."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.engine import Action, PolicySet, Rule
from policies.execs import LOADER_RULE, UNKNOWN_RULE, Exec, ExecError, evaluate_exec

REVIEW = ("reviewers",)
POLICY = PolicySet("guarded", Action.ALLOW, (
    Rule("no-rm", Action.BLOCK, programs=("rm", "unlink", "shred"), reason="deleting files is not allowed"),
    Rule("no-find-delete", Action.BLOCK, programs=("find",), args=("-delete",)),
    Rule("chmod-needs-approval", Action.REQUIRE_APPROVAL, programs=("chmod",), approver_roles=REVIEW, approvals=1,
         timeout=900),
    Rule("no-force-push", Action.BLOCK, command=re.compile(r"^git push .*--force")),
    Rule("warn-curl", Action.WARN, programs=("curl",)),
    Rule("admins-only-reboot", Action.BLOCK, programs=("reboot",), groups=("ops",)),
))
NO_APPROVERS = PolicySet("blocky", Action.ALLOW, (Rule("no-rm", Action.BLOCK, programs=("rm",)),))
HOLD_PYTHON = PolicySet("held-python", Action.ALLOW, (
    Rule("chmod-needs-approval", Action.REQUIRE_APPROVAL, programs=("chmod", "python3"), approver_roles=REVIEW,
         approvals=1),
))


def ev(exe: str, *argv: str, names: tuple[str, ...] = (), trusted: bool = True, copy_of: str | None = None,
       first: bool = False, chain: tuple[str, ...] = ("bash", "sshd")) -> Exec:
    base = exe.rsplit("/", 1)[-1]
    return Exec(exe=exe, argv=argv or (base,), cwd="/home/u", chain=chain,
                names=tuple(dict.fromkeys((base, *names))), trusted=trusted, copy_of=copy_of, first=first)


def judge(e: Exec, policy: PolicySet = POLICY, groups: tuple[str, ...] = ("ops",)):
    return evaluate_exec(policy, e, groups=groups, resource="web")


CASES = [
    # (exec, action, rule)
    (ev("/usr/bin/rm", "rm", "-f", "x"), Action.BLOCK, "no-rm"),
    (ev("/usr/bin/rm", "/bin/rm", "x"), Action.BLOCK, "no-rm"),
    # a copy of rm under another name is judged as rm
    (ev("/home/u/y", "./y", "f", trusted=False, copy_of="/usr/bin/rm", names=("rm",)), Action.BLOCK, "no-rm"),
    # argv[0] chosen by the attacker only adds a name: the strictest wins
    (ev("/usr/bin/ls", "rm", "x", names=("rm",)), Action.BLOCK, "no-rm"),
    # an alias in the system directories (vi -> vim.basic) is a name of the same program
    (ev("/usr/bin/vim.basic", "vi", "f", names=("vi", "vim")), Action.ALLOW, None),
    (ev("/usr/bin/find", "find", ".", "-delete"), Action.BLOCK, "no-find-delete"),
    (ev("/usr/bin/find", "find", ".", "-name", "x"), Action.ALLOW, None),
    (ev("/usr/bin/chmod", "chmod", "600", "f"), Action.REQUIRE_APPROVAL, "chmod-needs-approval"),
    (ev("/usr/bin/git", "git", "push", "origin", "--force"), Action.BLOCK, "no-force-push"),
    (ev("/usr/bin/curl", "curl", "http://127.0.0.1/"), Action.WARN, "warn-curl"),
    # a program neither from the system nor a copy of one waits for a reviewer (the policy's approvers)
    (ev("/home/u/a.out", "./a.out", trusted=False), Action.REQUIRE_APPROVAL, UNKNOWN_RULE),
    (ev("/memfd:x (deleted)", "x", trusted=False), Action.REQUIRE_APPROVAL, UNKNOWN_RULE),
    # ... unless a rule already blocks it
    (ev("/home/u/rm", "./rm", trusted=False), Action.BLOCK, "no-rm"),
    # the dynamic loader maps a program without an exec: as strict as the policy gets
    (ev("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "/lib64/ld-linux-x86-64.so.2", "/bin/ls"),
     Action.BLOCK, LOADER_RULE),
    # the session's own first program was judged when the session opened
    (ev("/usr/bin/bash", "-bash", first=True), Action.ALLOW, None),
    (ev("/usr/bin/ls", "ls", "-la"), Action.ALLOW, None),
    (ev("/usr/bin/bash", "bash", "script.sh"), Action.ALLOW, None),
]


@pytest.mark.parametrize(("exec_", "action", "rule"), CASES, ids=[c[0].describe()[:60] for c in CASES])
def test_exec_decisions(exec_: Exec, action: Action, rule: str | None) -> None:
    d = judge(exec_)
    assert (d.action, d.rule) == (action, rule), d.explanation
    assert d.text == exec_.describe()


def test_unknown_program_borrows_approvers_and_is_blocked_without_any() -> None:
    d = judge(ev("/tmp/tool", "/tmp/tool", trusted=False))
    assert d.approver_roles == REVIEW and d.approvals == 1 and d.timeout == 900
    assert "neither a system program nor a copy" in d.reason
    d = judge(ev("/tmp/tool", "/tmp/tool", trusted=False), NO_APPROVERS)
    assert (d.action, d.rule) == (Action.BLOCK, UNKNOWN_RULE)


def test_groups_and_default_apply() -> None:
    assert judge(ev("/usr/sbin/reboot"), groups=("ops",)).action == Action.BLOCK
    assert judge(ev("/usr/sbin/reboot"), groups=("admins",)).action == Action.ALLOW
    strict = PolicySet("strict", Action.REQUIRE_APPROVAL, (Rule("ok", Action.ALLOW, programs=("ls",)),))
    assert judge(ev("/usr/bin/ls"), strict).action == Action.ALLOW
    d = judge(ev("/usr/bin/cp", "cp", "a", "b"), strict)
    assert d.action == Action.REQUIRE_APPROVAL and d.rule is None


def test_describe_is_the_marker_text() -> None:
    e = ev("/usr/bin/rm", "rm", "-f", "my file", chain=("bash", "sshd"))
    assert e.describe() == "/usr/bin/rm rm -f 'my file' [by bash ← sshd]"
    c = ev("/tmp/y", "./y", trusted=False, copy_of="/usr/bin/rm", chain=())
    assert c.describe() == "/tmp/y (a copy of /usr/bin/rm) ./y"


@pytest.mark.parametrize("raw", [
    {}, {"exe": ""}, {"exe": 3}, {"exe": "/bin/ls", "argv": "ls"}, {"exe": "/bin/ls", "argv": [1]},
    {"exe": "/bin/ls", "names": [None]}, {"exe": "/bin/ls", "copy_of": 5}, {"exe": "/bin/ls", "cwd": None},
])
def test_malformed_reports_are_errors(raw: dict) -> None:
    with pytest.raises(ExecError):
        Exec.from_report(raw)


def test_report_fields_are_taken_strictly() -> None:
    report = {"exe": "/usr/bin/rm", "argv": ["rm", "x"], "names": ["rm"], "trusted": "yes", "first": 1,
              "chain": ["a"] * 50, "env": [], "trusted_args": []}
    e = Exec.from_report(report)
    assert e.trusted is False and e.first is False  # only a JSON true is true
    assert len(e.chain) == 8 and e.names == ("rm",)
    # a report that does not say what the session set in the environment, or which arguments are system files,
    # cannot be judged (an interpreter's script, LD_PRELOAD): refused, not assumed empty
    for missing in ("env", "trusted_args"):
        with pytest.raises(ExecError):
            Exec.from_report({k: v for k, v in report.items() if k != missing})
    for bad in ({"trusted_args": [True]}, {"trusted_args": ["1"]}, {"env": "LD_PRELOAD"}):
        with pytest.raises(ExecError):
            Exec.from_report({**report, **bad})


names = st.sampled_from(["rm", "ls", "y", "cat", "unlink", "python3", "chmod", "shred", "true"])
args = st.lists(st.sampled_from(["-f", "-rf", "x", "/etc/passwd", "--", "-delete", "600", "f"]), max_size=5)


@settings(max_examples=300, deadline=None)
@given(exe_name=names, extra=st.lists(names, max_size=3), argv=args, trusted=st.booleans(),
       copy=st.sampled_from([None, "/usr/bin/rm", "/usr/bin/ls"]))
def test_a_deleting_name_is_never_allowed(exe_name: str, extra: list[str], argv: list[str], trusted: bool,
                                          copy: str | None) -> None:
    """However the attacker composes the program's names (its file name, argv[0], a copy's original), a name a
    rule blocks is blocked; an unknown program is never plainly allowed."""
    e = Exec(exe=f"/somewhere/{exe_name}", argv=(exe_name, *argv), names=(exe_name, *extra), trusted=trusted,
             copy_of=copy)
    d = judge(e)
    if {"rm", "unlink", "shred"} & set(e.names):
        assert d.action == Action.BLOCK
    if not e.known:
        assert d.action >= Action.REQUIRE_APPROVAL


def test_the_programs_of_an_approved_command_are_not_held_twice() -> None:
    """The exec form's ``chmod 600 f && echo DONE`` was approved before the session opened: its chmod exec runs;
    another chmod (other arguments) is held again; a block stays a block."""
    from policies.execs import approved_commands, judge_with_approval

    pre = approved_commands("chmod 600 /home/u/f && echo DONE")
    same = ev("/usr/bin/chmod", "chmod", "600", "/home/u/f")
    other = ev("/usr/bin/chmod", "chmod", "777", "/home/u/f")
    assert judge_with_approval(judge(same), same, pre, "#1").action == Action.ALLOW
    assert judge_with_approval(judge(other), other, pre, "#1").action == Action.REQUIRE_APPROVAL
    rm = ev("/usr/bin/rm", "rm", "/home/u/f")
    assert judge_with_approval(judge(rm), rm, approved_commands("rm /home/u/f"), "#1").action == Action.BLOCK
    # a variable: the reviewer saw that its value was unknown
    pre = approved_commands("chmod 600 $F")
    assert judge_with_approval(judge(other), other, pre, "#1").action == Action.ALLOW
    assert approved_commands("chmod 'unterminated") == ()
    # not the program the reviewer read: the operator's own ./chmod, or another file run with argv[0] "chmod"
    pre = approved_commands("chmod 600 /home/u/f")
    for program in (ev("/home/u/chmod", "./chmod", "600", "/home/u/f", trusted=False),
                    ev("/home/u/y", "chmod", "600", "/home/u/f", names=("chmod",), trusted=False),
                    ev("/usr/bin/python3", "chmod", "600", "/home/u/f", names=("chmod", "python3.11"))):
        d = judge_with_approval(judge(program, HOLD_PYTHON), program, pre, "#1")
        assert d.action == Action.REQUIRE_APPROVAL, program
    # a copy of chmod is chmod
    copy = ev("/home/u/c", "./c", "600", "/home/u/f", names=("chmod",), trusted=False, copy_of="/usr/bin/chmod")
    assert judge_with_approval(judge(copy), copy, pre, "#1").action == Action.ALLOW


@pytest.mark.parametrize(("line", "filtered", "guarded"), [
    ("bash s.sh", Action.BLOCK, Action.ALLOW),            # the script's programs are judged as they run
    ("eval \"$(echo cm0gZgo= | base64 -d)\"", Action.BLOCK, Action.ALLOW),
    ("python3 -c 'print(1)'", Action.BLOCK, Action.ALLOW),
    ("rm f", Action.BLOCK, Action.BLOCK),                 # a program a rule names is still refused at once
    ("echo x > \"$F\"", Action.BLOCK, Action.BLOCK),        # the shell's own writes are not execs: still opaque
    ("echo x > ~/.bashrc", Action.BLOCK, Action.BLOCK),
    ("ls -la", Action.ALLOW, Action.ALLOW),
])
def test_a_guarded_exec_form_leaves_programs_to_the_guard(line: str, filtered: Action, guarded: Action) -> None:
    from policies.engine import evaluate

    for flag, want in ((False, filtered), (True, guarded)):
        d = evaluate(POLICY, line, groups=("ops",), resource="web", terminal=False, guarded=flag)
        assert d.action == want, (line, flag, d.explanation)


@pytest.mark.parametrize(("argv", "shown_as"), [
    (("chmod", "600", "/tmp/a\r\x1b[2Kchmod 600 /tmp/b"), "chmod 600 $'/tmp/a\\r\\x1b[2Kchmod 600 /tmp/b'"),
    (("ls", "a\nexec: /usr/bin/true true"), "ls $'a\\nexec: /usr/bin/true true'"),
    (("ls", "caf\udce9"), "ls $'caf\\xe9'"),                 # an undecodable byte, as the byte
    (("ls", "caf\u00e9"), "ls 'café'"),                       # a printable character stays itself
    (("ls", "x\u202eyz"), "ls $'x\\u202eyz'"),               # right-to-left override: shown, not obeyed
    (("ls", "a\u200bb"), "ls $'a\\u200bb'"),                 # zero-width space
    (("ls", "it's \\x1b"), "ls 'it'\"'\"'s \\x1b'"),          # a backslash typed as text stays text
    (("ls", "it's\t\\"), "ls $'it\\'s\\t\\\\'"),
])
def test_what_a_reviewer_reads_is_what_runs(argv: tuple[str, ...], shown_as: str) -> None:
    """The marker's, the operator's and the reviewer's text never carries a control character, an escape sequence,
    a line break or an invisible character from an argv or a path: each is written out, quoted as bash would."""
    e = ev("/usr/bin/" + argv[0], *argv, chain=("ba\x1b]0;x\x07sh", "sshd"))
    text = e.describe()
    assert text == f"/usr/bin/{argv[0]} {shown_as} [by $'ba\\x1b]0;x\\x07sh' ← sshd]"
    assert text.isprintable()


def test_an_unknown_programs_reason_shows_its_path_written_out() -> None:
    e = ev("/home/u/\x1b[2K\r/usr/bin/ls", "ls", trusted=False)
    d = judge(e)
    assert d.rule == UNKNOWN_RULE and d.text.isprintable() and d.reason.isprintable()
    assert "$'/home/u/\\x1b[2K\\r/usr/bin/ls'" in d.text and "$'/home/u/\\x1b[2K\\r/usr/bin/ls'" in d.reason
    assert all(w.isprintable() for w in d.explanation)
