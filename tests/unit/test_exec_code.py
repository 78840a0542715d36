"""Programs that act without an exec, under bastion-guard (policies/execs.py): an interpreter running code of the
session's (``python3 -c 'os.remove(...)'``), a loader variable (``LD_PRELOAD``). The guard sees none of what they
do, so they get the policy's strictest action, unless a rule names the program; a system script run by its
interpreter, a version query, a shell and an editor stay judged by name."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.engine import Action, PolicySet, Rule
from policies.execs import CODE_RULE, LOADER_RULE, Exec, evaluate_exec

REVIEW = ("reviewers",)
BLOCKY = PolicySet("blocky", Action.ALLOW, (
    Rule("no-rm", Action.BLOCK, programs=("rm", "unlink"), reason="deleting files is not allowed"),
    Rule("no-ansible", Action.BLOCK, programs=("ansible-playbook", "deploy.sh")),
    Rule("everything-else", Action.ALLOW, programs=("*",)),   # a catch-all does not name an interpreter
))
HOLDING = PolicySet("holding", Action.ALLOW, (
    Rule("chmod-needs-approval", Action.REQUIRE_APPROVAL, programs=("chmod",), approver_roles=REVIEW, approvals=1,
         timeout=600),
))
NAMED = PolicySet("named", Action.ALLOW, (
    Rule("no-rm", Action.BLOCK, programs=("rm",)),
    Rule("python-is-fine-here", Action.ALLOW, programs=("python3*",)),
))
LSB = "/usr/bin/lsb_release"


def ev(exe: str, *argv: str, names: tuple[str, ...] = (), env: tuple[str, ...] = (),
       scripts: tuple[int, ...] = (), trusted: bool = True, copy_of: str | None = None) -> Exec:
    base = exe.rsplit("/", 1)[-1]
    return Exec(exe=exe, argv=argv or (base,), cwd="/home/u", chain=("bash", "sshd"),
                names=tuple(dict.fromkeys((base, *names))), trusted=trusted, copy_of=copy_of, env=env,
                trusted_args=scripts)


PY = "/usr/bin/python3.11"
CASES = [
    # (exec, action, rule) under BLOCKY, whose strictest action is block
    (ev(PY, "python3", "-c", "import os; os.remove('f')", names=("python3",)), Action.BLOCK, CODE_RULE),
    (ev(PY, "python3", "./x.py", names=("python3",)), Action.BLOCK, CODE_RULE),
    (ev(PY, "python3", names=("python3",)), Action.BLOCK, CODE_RULE),                  # code from its input
    (ev(PY, "python3", "-m", "http.server", names=("python3",)), Action.BLOCK, CODE_RULE),
    (ev(PY, "python3", "-", names=("python3",)), Action.BLOCK, CODE_RULE),
    (ev("/usr/bin/perl", "perl", "-e", "unlink 'f'"), Action.BLOCK, CODE_RULE),
    (ev("/usr/bin/perl", "perl", "-E", "unlink 'f'"), Action.BLOCK, CODE_RULE),
    (ev("/usr/bin/node", "node", "-e", "fs.rmSync('f')"), Action.BLOCK, CODE_RULE),
    (ev("/usr/bin/ruby3.1", "ruby", "-e", "File.delete('f')", names=("ruby",)), Action.BLOCK, CODE_RULE),
    (ev("/usr/bin/php8.2", "php", "-r", "unlink('f');", names=("php",)), Action.BLOCK, CODE_RULE),
    (ev("/usr/bin/lua5.4", "lua", "-e", "os.remove('f')", names=("lua",)), Action.BLOCK, CODE_RULE),
    (ev("/usr/bin/tclsh8.6", "tclsh", names=("tclsh",)), Action.BLOCK, CODE_RULE),
    (ev("/usr/bin/gdb", "gdb", "-batch", "-ex", "python import os"), Action.BLOCK, CODE_RULE),
    # a renamed or copied interpreter is the interpreter (its names come from the file, not from the operator)
    (ev("/home/u/p", "./p", "-c", "1", names=("python3", "python3.11"), trusted=False, copy_of=PY),
     Action.BLOCK, CODE_RULE),
    # loader variables the session set map code into any program
    (ev("/usr/bin/ls", "ls", env=("LD_PRELOAD",)), Action.BLOCK, LOADER_RULE),
    (ev("/usr/bin/ls", "ls", env=("PWD", "LD_LIBRARY_PATH")), Action.BLOCK, LOADER_RULE),
    (ev("/usr/bin/iconv", "iconv", "-f", "x", env=("GCONV_PATH",)), Action.BLOCK, LOADER_RULE),
    # a system script, by its interpreter, with flags that keep the user's code out
    (ev(PY, "/usr/bin/python3", "-Es", LSB, "-a", names=("python3",), scripts=(2,)), Action.ALLOW, "everything-else"),
    (ev(PY, "/usr/bin/python3", "-I", LSB, names=("python3",), scripts=(2,)), Action.ALLOW, "everything-else"),
    (ev("/usr/bin/perl", "/usr/bin/perl", "/usr/bin/json_pp", scripts=(1,)), Action.ALLOW, "everything-else"),
    (ev("/usr/bin/perl", "/usr/bin/perl", "-w", "/usr/bin/json_pp", scripts=(2,)), Action.ALLOW, "everything-else"),
    # ... but not when Python would read the user's site-packages (.pth files run code) or PYTHONPATH
    (ev(PY, "/usr/bin/python3", LSB, names=("python3",), scripts=(1,)), Action.BLOCK, CODE_RULE),
    (ev(PY, "/usr/bin/python3", "-s", LSB, names=("python3",), scripts=(2,)), Action.BLOCK, CODE_RULE),
    (ev("/usr/bin/perl", "perl", "/usr/bin/json_pp", env=("PERL5OPT",), scripts=(1,)), Action.BLOCK, CODE_RULE),
    (ev("/usr/bin/perl", "perl", "-Mevil", "/usr/bin/json_pp", scripts=(2,)), Action.BLOCK, CODE_RULE),
    # ... nor when the guard did not find the operand to be a trusted file, nor with code before the script
    (ev(PY, "python3", "-Es", LSB, names=("python3",)), Action.BLOCK, CODE_RULE),
    (ev(PY, "python3", "-Es", "-c", "1", LSB, names=("python3",), scripts=(4,)), Action.BLOCK, CODE_RULE),
    (ev(PY, "python3", "-W", "ignore", LSB, names=("python3",), scripts=(3,)), Action.BLOCK, CODE_RULE),
    # a rule naming the script tool holds it, although the exec is its interpreter's
    (ev(PY, "/usr/bin/python3", "-Es", "/usr/bin/ansible-playbook", "x.yml", names=("python3",), scripts=(2,)),
     Action.BLOCK, "no-ansible"),
    (ev("/usr/bin/bash", "/bin/bash", "/opt/ops/deploy.sh", "prod"), Action.BLOCK, "no-ansible"),
    (ev("/usr/bin/bash", "/bin/bash", "-e", "/opt/ops/deploy.sh"), Action.BLOCK, "no-ansible"),
    # a multi-call binary is the applet it runs; its shells run applets in-process (no exec for rm)
    (ev("/usr/bin/busybox", "busybox", "rm", "f", names=("sh", "rm", "ls")), Action.BLOCK, "no-rm"),
    (ev("/usr/bin/busybox", "./rm", "f", names=("rm",)), Action.BLOCK, "no-rm"),
    (ev("/usr/bin/busybox", "busybox", "sh", "-c", "rm f"), Action.BLOCK, CODE_RULE),
    (ev("/usr/bin/busybox", "./ash", "-c", "rm f", names=("ash",)), Action.BLOCK, CODE_RULE),
    (ev("/home/u/b1", "busybox", "ash", names=("busybox",), trusted=False, copy_of="/usr/bin/busybox"),
     Action.BLOCK, CODE_RULE),                                                      # exec -a busybox ./b1 ash
    (ev("/usr/bin/busybox", "ls", "-l", names=("ls", "rm", "sh")), Action.ALLOW, "everything-else"),
    (ev("/usr/bin/busybox", "busybox", "--list", names=("rm", "sh")), Action.ALLOW, "everything-else"),
    # the honest path: version questions, shells (their programs are execs), exec-only runners, editing a file
    (ev(PY, "python3", "--version", names=("python3",)), Action.ALLOW, "everything-else"),
    (ev("/usr/bin/perl", "perl", "-v"), Action.ALLOW, "everything-else"),
    (ev("/usr/bin/node", "node", "--version"), Action.ALLOW, "everything-else"),
    (ev("/usr/bin/bash", "bash", "s.sh"), Action.ALLOW, "everything-else"),
    (ev("/usr/bin/bash", "bash", "-c", "ls"), Action.ALLOW, "everything-else"),
    (ev("/usr/bin/make", "make", "-j2"), Action.ALLOW, "everything-else"),
    (ev("/usr/bin/psql", "psql", "-c", "select 1"), Action.ALLOW, "everything-else"),
    (ev("/usr/bin/vim.basic", "vim", "+10", "notes.txt", names=("vim",)), Action.ALLOW, "everything-else"),
    (ev("/usr/bin/vim.basic", "vim", "notes.txt", names=("vim",)), Action.ALLOW, "everything-else"),
    # editors are judged by name whatever their flags: they change files by design (vim's `:w` as much as its
    # delete()); what `:!rm` runs is an exec, judged (docs/guard.md, known limits)
    (ev("/usr/bin/vim.basic", "vim", "-es", "-c", "!rm f", names=("vim", "vi")), Action.ALLOW, "everything-else"),
    (ev("/usr/bin/emacs", "emacs", "notes.txt"), Action.ALLOW, "everything-else"),
    (ev("/usr/bin/ls", "ls", env=("PWD", "OLDPWD", "EDITOR", "PYTHONPATH")), Action.ALLOW, "everything-else"),
]


@pytest.mark.parametrize(("exec_", "action", "rule"), CASES, ids=[c[0].describe()[:70] for c in CASES])
def test_code_the_guard_cannot_see(exec_: Exec, action: Action, rule: str | None) -> None:
    d = evaluate_exec(BLOCKY, exec_, groups=("ops",), resource="web")
    assert (d.action, d.rule) == (action, rule), d.explanation


def test_an_interpreter_waits_for_the_policys_reviewers_where_that_is_the_strictest() -> None:
    d = evaluate_exec(HOLDING, ev(PY, "python3", "-c", "print(1)", names=("python3",)), groups=("ops",),
                      resource="web")
    assert (d.action, d.rule) == (Action.REQUIRE_APPROVAL, CODE_RULE)
    assert d.approver_roles == REVIEW and d.timeout == 600
    assert "python3" in d.reason and "a rule naming the program decides" in d.reason
    # the reviewer reads the code itself
    assert "print(1)" in d.text


def test_a_rule_that_names_the_interpreter_decides() -> None:
    """The policy's author can say python3 is fine here (or not): a rule naming it wins over the built-in one; the
    loader variables stay refused whatever the rules."""
    d = evaluate_exec(NAMED, ev(PY, "python3", "-c", "print(1)", names=("python3",)), groups=("ops",), resource="w")
    assert (d.action, d.rule) == (Action.ALLOW, "python-is-fine-here")
    d = evaluate_exec(NAMED, ev(PY, "python3", "-c", "1", names=("python3",), env=("LD_PRELOAD",)),
                      groups=("ops",), resource="w")
    assert (d.action, d.rule) == (Action.BLOCK, LOADER_RULE)


INTERPRETERS = ["python3", "python3.12", "perl", "perl5.36", "node", "ruby", "php", "lua5.4", "pypy3"]
WORDS = ["-c", "-e", "-E", "-s", "-I", "-Es", "-m", "-w", "-W", "ignore", "--", "-", "x.py", LSB, "-r", "+x",
         "print(1)", "--version", "-v", "-Ms"]


@settings(max_examples=400, deadline=None)
@given(name=st.sampled_from(INTERPRETERS), argv=st.lists(st.sampled_from(WORDS), max_size=5),
       env=st.sets(st.sampled_from(["PYTHONPATH", "PERL5LIB", "PERL5OPT", "LD_PRELOAD", "HOME", "PWD"])),
       scripts=st.sets(st.integers(min_value=1, max_value=5)))
def test_an_interpreter_is_allowed_only_for_a_version_or_a_clean_system_script(
        name: str, argv: list[str], env: set[str], scripts: set[int]) -> None:
    """Whatever flags, operands and environment the attacker composes, an interpreter under BLOCKY (where only a
    rule's catch-all would allow it) runs only to print its version, or on a system script the guard vouched for,
    with nothing but plain flags before it, no loader variable, and for Python without the user's site-packages."""
    full = (name, *argv)
    e = ev(f"/usr/bin/{name}", *full, env=tuple(env),
           scripts=tuple(i for i in scripts if i < len(full) and full[i] == LSB))
    d = evaluate_exec(BLOCKY, e, groups=("ops",), resource="web")
    if d.action != Action.ALLOW:
        return
    assert "LD_PRELOAD" not in env
    if argv and all(a in ("--version", "-v") for a in argv):
        return
    at = next(i for i, a in enumerate(argv) if not re.fullmatch(r"-[A-Za-z]+", a) or a == "--")
    at += argv[at] == "--"
    assert argv[at] == LSB and at + 1 in e.trusted_args, argv
    flags = "".join(a[1:] for a in argv[:at] if a != "--")
    assert not set(flags) & set("cmWXi" if name.startswith("py") else "eEmMI"), argv
    if name.startswith("py"):
        assert "I" in flags or {"E", "s"} <= set(flags), argv
    else:
        assert not env & {"PERL5LIB", "PERL5OPT"}
