"""The exec form as a boundary (issue 16): hostile spellings of a deletion or a chmod, class by class, must get the
rule's action (or the strictest of the set when the engine cannot see through them), and everyday commands must stay
allowed with no approval.

The tables live in tests/support/exec_spellings.py (the end-to-end suite runs most of them through OpenSSH against a
real sshd). The policy is the demo's deny-list one: default allow; deleting blocked; chmod/chown/chgrp held.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.engine import Action, Decision, PolicySet, Rule, evaluate
from tests.support.exec_spellings import HARMLESS, HOSTILE, Spelling

POLICY = PolicySet("demo-shell", Action.ALLOW, (
    Rule("no-rm", Action.BLOCK, programs=("rm", "unlink", "shred", "rmdir"), reason="deleting files is not allowed"),
    Rule("no-find-delete", Action.BLOCK, programs=("find",), args=("-delete",), reason="deleting files is not allowed"),
    Rule("chmod-needs-approval", Action.REQUIRE_APPROVAL, programs=("chmod", "chown", "chgrp"),
         approver_roles=("reviewers",), reason="permission changes need a reviewer's approval"),
))
RULES = {r.name for r in POLICY.rules}
D = "/srv/app"
F = f"{D}/victim"


def judge(text: str, *, interactive: bool = False, terminal: bool = False) -> Decision:
    return evaluate(POLICY, text, groups=("ops",), resource="demo-shell", interactive=interactive, terminal=terminal)


def minimum(s: Spelling) -> Action:
    return Action.BLOCK if s.effect == "rm" else Action.REQUIRE_APPROVAL


def modes(s: Spelling) -> list[tuple[bool, bool]]:
    """(interactive, terminal) pairs the line is judged in."""
    return {"exec": [(False, False), (False, True)], "tty": [(False, True)], "prompt": [(True, True)]}[s.mode]


def problems(s: Spelling) -> list[str]:
    text, out = s.render(F, D), []
    for interactive, terminal in modes(s):
        d = judge(text, interactive=interactive, terminal=terminal)
        named = d.rule in RULES or any(f"'{r}'" in d.reason or r in d.reason for r in RULES)
        if d.action < minimum(s) or not named:
            out.append(f"{text!r} (interactive={interactive}, terminal={terminal}): {d.action.label} by "
                       f"{d.rule!r}: {d.reason}")
    return out


def of(cls: str) -> list[Spelling]:
    return [s for s in HOSTILE if s.cls == cls]


def ids(s: Spelling) -> str:
    return f"{s.mode}:{s.text}"


def test_the_tables_are_as_large_as_the_issue_asks() -> None:
    assert len({(s.text, s.mode) for s in HOSTILE}) >= 150
    assert len(HARMLESS) >= 40
    for cls in ("wrappers", "interpreters", "capabilities", "environment", "deleters", "scripts", "shells",
                "history"):
        assert len(of(cls)) >= 10, cls


@pytest.mark.parametrize("s", of("wrappers"), ids=ids)
def test_wrappers_are_parsed_by_their_real_option_grammar(s: Spelling) -> None:
    assert problems(s) == []


@pytest.mark.parametrize("s", of("interpreters"), ids=ids)
def test_interpreters_running_code_are_opaque(s: Spelling) -> None:
    assert problems(s) == []


@pytest.mark.parametrize("s", of("capabilities"), ids=ids)
def test_programs_that_run_commands_are_seen_through_or_opaque(s: Spelling) -> None:
    assert problems(s) == []


@pytest.mark.parametrize("s", of("environment"), ids=ids)
def test_environment_that_makes_a_program_run_code_is_opaque(s: Spelling) -> None:
    assert problems(s) == []


@pytest.mark.parametrize("s", of("deleters"), ids=ids)
def test_programs_that_delete_or_change_modes_under_other_names(s: Spelling) -> None:
    assert problems(s) == []


@pytest.mark.parametrize("s", of("scripts"), ids=ids)
def test_scripts_and_programs_outside_system_directories_are_opaque(s: Spelling) -> None:
    assert problems(s) == []


@pytest.mark.parametrize("s", of("shells"), ids=ids)
def test_shells_and_repls_through_the_exec_form_are_opaque(s: Spelling) -> None:
    assert problems(s) == []


@pytest.mark.parametrize("s", of("terminal"), ids=ids)
def test_pagers_and_editors_with_a_terminal_are_opaque(s: Spelling) -> None:
    assert problems(s) == []


@pytest.mark.parametrize("s", of("history"), ids=ids)
def test_history_expansion_at_a_prompt_is_opaque(s: Spelling) -> None:
    assert problems(s) == []


def test_deletion_seen_through_a_wrapper_is_decided_by_the_rule_itself() -> None:
    """Where the engine sees the program, the program's own rule decides (not only 'opaque')."""
    for text, rule, action in [
        (f"timeout -vk 5 10 rm -f {F}", "no-rm", Action.BLOCK),
        (f"echo {F} | xargs -rn 1 rm -f", "no-rm", Action.BLOCK),
        (f"strace -fe trace=none rm -f {F}", "no-rm", Action.BLOCK),
        (f"env - rm -f {F}", "no-rm", Action.BLOCK),
        (f"/usr/bin/time -p rm -f {F}", "no-rm", Action.BLOCK),
        (f"nice -n5 chmod 777 {F}", "chmod-needs-approval", Action.REQUIRE_APPROVAL),
        (f"timeout --kill-a=5 10 chmod 777 {F}", "chmod-needs-approval", Action.REQUIRE_APPROVAL),
        (f"env -S'chmod 777 {F}'", "chmod-needs-approval", Action.REQUIRE_APPROVAL),
        (f"find {F} -exec chmod 777 {{}} \\;", "chmod-needs-approval", Action.REQUIRE_APPROVAL),
        (f"find {D} -name victim -delete", "no-find-delete", Action.BLOCK),
    ]:
        d = judge(text)
        assert (d.action, d.rule) == (action, rule), (text, d.summary())


def test_interpreter_and_shell_versions_are_not_opaque() -> None:
    for text in ("python3 --version", "bash --version", "python3 -V"):
        assert judge(text).action == Action.ALLOW, (text, judge(text).summary())


def test_pagers_without_a_terminal_are_just_output() -> None:
    for text in (f"less {D}/data", f"more {D}/data", "man ls"):
        d = judge(text, terminal=False)
        assert d.action == Action.ALLOW, (text, d.summary())


def test_history_designators_are_plain_text_outside_a_prompt_and_in_single_quotes() -> None:
    """bash -c (the exec form) has no history expansion, and single quotes never expand."""
    assert judge("echo '!!'", interactive=True, terminal=True).action == Action.ALLOW
    assert judge("echo !!").action == Action.ALLOW
    assert judge("grep -c '^!' f", interactive=True, terminal=True).action == Action.ALLOW


@pytest.mark.parametrize("text, words", [
    (f"timeout -vk 5 10 rm -f {F}", ["timeout", "rm"]),
    (f"sudo -u root timeout -k5 10 nice -n5 rm -f {F}", ["sudo", "timeout", "nice", "rm"]),
    (f"env -i stdbuf -oL nohup chmod 777 {F}", ["env", "stdbuf", "nohup", "chmod"]),
    (f"echo {F} | xargs -rn 1 rm -f", ["xargs", "rm"]),
    (f"/usr/bin/time -p ionice -c2 -n7 rm {F}", ["time", "ionice", "rm"]),
    (f"strace -fe trace=none flock -w 5 {D}/lock rm {F}", ["strace", "flock", "rm"]),
])
def test_explanation_names_each_wrapper_consumed(text: str, words: list[str]) -> None:
    d = judge(text)
    lines = [line for line in d.explanation if line.strip() != text]
    joined = "\n".join(lines)
    missing = [w for w in words if not re.search(rf"\b{re.escape(w)}\b", joined)]
    assert missing == [], (text, d.explanation)


# ---------------------------------------------------------------------------------------------------------------
# Everyday commands: allowed, no approval.

def _harmless_ids(h: object) -> str:
    return getattr(h, "text", "")


@pytest.mark.parametrize("h", HARMLESS, ids=_harmless_ids)
def test_harmless_commands_stay_allowed_in_the_exec_form(h: object) -> None:
    text = h.render(D)  # type: ignore[attr-defined]
    d = judge(text)
    assert d.action == Action.ALLOW, (text, d.summary(), d.explanation)


@pytest.mark.parametrize("h", [h for h in HARMLESS if not h.pager], ids=_harmless_ids)
def test_harmless_commands_stay_allowed_with_a_terminal_and_at_a_prompt(h: object) -> None:
    text = h.render(D)  # type: ignore[attr-defined]
    for interactive in (False, True):
        d = judge(text, interactive=interactive, terminal=True)
        assert d.action == Action.ALLOW, (text, interactive, d.summary())


# ---------------------------------------------------------------------------------------------------------------
# Property: a chain of wrappers, spelled with random combined/attached short options, long options with = or a
# separate argument, unambiguous GNU abbreviations and `--`, never gets a looser decision than the bare command.

class Opt:
    """One option: its short letter and/or long name, the argument values it takes (none: a flag), and an
    unambiguous abbreviation of its long name."""

    def __init__(self, short: str | None = None, long: str | None = None, values: tuple[str, ...] = (),
                 abbrev: str | None = None):
        self.short, self.long, self.values, self.abbrev = short, long, values, abbrev


class Wrapper:
    def __init__(self, names: tuple[str, ...], opts: list[Opt], *, positional: tuple[str, ...] = (),
                 dashdash: bool = True, combine: bool = True, attach: bool = True, builtin: bool = False,
                 min_opts: int = 0, extra: tuple[str, ...] = ()):
        self.names, self.opts, self.positional = names, opts, positional
        self.dashdash, self.combine, self.attach, self.builtin, self.min_opts = dashdash, combine, attach, builtin, \
            min_opts
        self.extra = extra  # operands between the options and the command (env's `-` and assignments)


WRAPPER_TABLE: dict[str, Wrapper] = {
    "timeout": Wrapper(("timeout", "/usr/bin/timeout"), [
        Opt("k", "kill-after", ("5", "1s"), "kill-a"), Opt("s", "signal", ("KILL", "9", "TERM"), "sig"),
        Opt("v", "verbose", abbrev="verb"), Opt(None, "preserve-status", abbrev="pres"),
        Opt(None, "foreground", abbrev="fore")], positional=("10", "10s", "1m")),
    "nice": Wrapper(("nice", "/usr/bin/nice", "/bin/nice"), [Opt("n", "adjustment", ("5", "10", "-3"), "adj")]),
    "env": Wrapper(("env", "/usr/bin/env"), [
        Opt("i", "ignore-environment", abbrev="ignore-e"), Opt("u", "unset", ("X", "HOME"), "uns"),
        Opt("v", "debug", abbrev="deb"), Opt("C", "chdir", ("/", "/tmp"), "chd")], extra=("-", "A=1", "B=x")),
    "stdbuf": Wrapper(("stdbuf", "/usr/bin/stdbuf"), [
        Opt("o", "output", ("L", "0", "4K"), "out"), Opt("i", "input", ("0",), "in"),
        Opt("e", "error", ("L", "0"), "err")], min_opts=1),
    "nohup": Wrapper(("nohup", "/usr/bin/nohup"), []),
    "setsid": Wrapper(("setsid", "/usr/bin/setsid"), [Opt("w", "wait", abbrev="wa"), Opt("f", "fork", abbrev="fo")]),
    "ionice": Wrapper(("ionice", "/usr/bin/ionice"), [
        Opt("c", "class", ("2", "3", "idle", "best-effort")), Opt("n", "classdata", ("7", "0"), "classd"),
        Opt("t", "ignore", abbrev="ig")]),
    "chrt": Wrapper(("chrt", "/usr/bin/chrt"), [Opt("b", "batch", abbrev="ba"), Opt("v", "verbose", abbrev="verb"),
                                               Opt("R", "reset-on-fork", abbrev="res")], positional=("0",)),
    "taskset": Wrapper(("taskset", "/usr/bin/taskset"), [Opt("a", "all-tasks", abbrev="all"),
                                                         Opt("c", "cpu-list", abbrev="cpu")], positional=("1",)),
    "sudo": Wrapper(("sudo", "/usr/bin/sudo"), [
        Opt("u", "user", ("root", "www-data")), Opt("g", "group", ("root",)), Opt("n", "non-interactive"),
        Opt("E", "preserve-env"), Opt("H", "set-home"), Opt("b", "background"), Opt("P", "preserve-groups"),
        Opt("S", "stdin"), Opt("D", "chdir", ("/",))]),
    "doas": Wrapper(("doas", "/usr/bin/doas"), [Opt("u", None, ("root",)), Opt("n")]),
    "command": Wrapper(("command",), [Opt("p")], builtin=True),
    "exec": Wrapper(("exec",), [Opt("a", None, ("x", "sshd")), Opt("c"), Opt("l")], builtin=True),
    "time": Wrapper(("time",), [Opt("p")], builtin=True, combine=False),
    "/usr/bin/time": Wrapper(("/usr/bin/time",), [
        Opt("p", "portability", abbrev="port"), Opt("q", "quiet", abbrev="qu"), Opt("v", "verbose", abbrev="verb"),
        Opt("a", "append", abbrev="app"), Opt("o", "output", ("/dev/null",), "out"),
        Opt("f", "format", ("%e",), "form")]),
    "strace": Wrapper(("strace", "/usr/bin/strace"), [
        Opt("f"), Opt("q"), Opt("e", None, ("trace=none", "trace=file")), Opt("o", None, ("/dev/null",)),
        Opt("s", None, ("64",))]),
    "ltrace": Wrapper(("ltrace", "/usr/bin/ltrace"), [Opt("f"), Opt("o", None, ("/dev/null",)), Opt("i")]),
    "flock": Wrapper(("flock", "/usr/bin/flock"), [
        Opt("x", "exclusive", abbrev="ex"), Opt("s", "shared", abbrev="sh"), Opt("n", "nonblock", abbrev="nonb"),
        Opt("o", "close", abbrev="cl"), Opt("w", "timeout", ("5", "0.5"), "time"),
        Opt("E", "conflict-exit-code", ("3",), "conf")], positional=("/tmp/lock",)),
    "xargs": Wrapper(("xargs", "/usr/bin/xargs"), [
        Opt("r", "no-run-if-empty", abbrev="no-run"), Opt("n", "max-args", ("1", "2"), "max-a"),
        Opt("0", "null", abbrev="nul"), Opt("P", "max-procs", ("2",), "max-p"), Opt("t", "verbose", abbrev="verb"),
        Opt("s", "max-chars", ("4096",), "max-c")]),
    "unbuffer": Wrapper(("unbuffer",), [Opt("p")], dashdash=False, combine=False),
}


@st.composite
def wrapper_spelling(draw: st.DrawFn, name: str) -> list[str]:
    w = WRAPPER_TABLE[name]
    words = [draw(st.sampled_from(w.names))]
    opts = draw(st.lists(st.sampled_from(w.opts), min_size=w.min_opts, max_size=len(w.opts), unique_by=id)) \
        if w.opts else []
    cluster_open = False  # the last word is a short-option cluster that may take one more flag
    for o in opts:
        value = draw(st.sampled_from(o.values)) if o.values else None
        use_long = o.long is not None and (o.short is None or draw(st.booleans()))
        if use_long:
            name_ = draw(st.sampled_from([o.long, o.abbrev] if o.abbrev else [o.long]))
            if value is None:
                words.append(f"--{name_}")
            elif draw(st.booleans()):
                words.append(f"--{name_}={value}")
            else:
                words += [f"--{name_}", value]
            cluster_open = False
            continue
        assert o.short is not None
        if cluster_open and w.combine and draw(st.booleans()):
            words[-1] += o.short
        else:
            words.append(f"-{o.short}")
        if value is None:
            cluster_open = True
        elif w.attach and draw(st.booleans()):
            words[-1] += value
            cluster_open = False
        else:
            words.append(value)
            cluster_open = False
    if w.dashdash and draw(st.booleans()):
        words.append("--")
    if w.extra:
        if "-" in w.extra and draw(st.booleans()):
            words.append("-")
        words += draw(st.lists(st.sampled_from([e for e in w.extra if e != "-"]), max_size=2, unique=True))
    if w.positional:
        words.append(draw(st.sampled_from(w.positional)))
    return words


@st.composite
def wrapper_chain(draw: st.DrawFn, names: list[str]) -> str:
    """1-4 wrappers; shell builtins (command, exec, time) only at the front, where bash would run them."""
    builtins = [n for n in names if WRAPPER_TABLE[n].builtin]
    binaries = [n for n in names if not WRAPPER_TABLE[n].builtin]
    front = draw(st.lists(st.sampled_from(builtins), max_size=2)) if builtins else []
    rest = draw(st.lists(st.sampled_from(binaries), min_size=0 if front else 1, max_size=4 - len(front)))
    return " ".join(" ".join(draw(wrapper_spelling(n))) for n in [*front, *rest])


INNER = [f"rm -f {F}", f"rm {F}", f"chmod 777 {F}", f"chown nobody {F}", f"unlink {F}", f"shred -u {F}"]
HOSTILE_SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@HOSTILE_SETTINGS
@given(chain=wrapper_chain(list(WRAPPER_TABLE)), inner=st.sampled_from(INNER))
def test_wrapper_chains_are_never_looser_than_the_bare_command(chain: str, inner: str) -> None:
    bare = judge(inner)
    for terminal in (False, True):
        d = judge(f"{chain} {inner}", terminal=terminal)
        assert d.action >= bare.action, (f"{chain} {inner}", d.summary(), d.explanation)
        assert d.rule is not None, (f"{chain} {inner}", d.summary())


@HOSTILE_SETTINGS
@given(chain=wrapper_chain(list(WRAPPER_TABLE)),
       inner=st.sampled_from(INNER), sep=st.sampled_from(["; ", " && ", " | ", " || ", "\n"]))
def test_wrapper_chains_after_a_harmless_command_are_never_looser(chain: str, inner: str, sep: str) -> None:
    bare = judge(inner)
    d = judge(f"ls -l{sep}{chain} {inner}")
    assert d.action >= bare.action, (f"ls -l{sep}{chain} {inner}", d.summary())


@settings(max_examples=300, deadline=None)
@given(chain=wrapper_chain(list(WRAPPER_TABLE)))
def test_harmless_wrappers_around_a_harmless_command_never_block(chain: str) -> None:
    """The honest path stays usable: known wrappers with known options around `ls -l` are not refused."""
    d = judge(f"{chain} ls -l")
    assert d.action != Action.BLOCK, (f"{chain} ls -l", d.summary(), d.explanation)


# interpreters: any combination of flags that ends in running code from a string
PY_FLAGS, PL_FLAGS, SH_FLAGS = "IBSsuEOqbR", "lwTsaW", "exuvlhBCfP"


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_interpreter_flag_spellings_running_code_are_never_allowed(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["python3", "perl", "bash", "sh", "node"]))
    flags = {"python3": PY_FLAGS, "perl": PL_FLAGS, "bash": SH_FLAGS, "sh": SH_FLAGS, "node": ""}[kind]
    chosen = "".join(data.draw(st.lists(st.sampled_from(list(flags)), max_size=4, unique=True))) if flags else ""
    code = {"python3": f'import os; os.remove("{F}")', "perl": f'unlink "{F}"', "bash": f"rm -f {F}",
            "sh": f"rm -f {F}", "node": f'require("fs").unlinkSync("{F}")'}[kind]
    runner = {"python3": "c", "perl": data.draw(st.sampled_from(["e", "E"])), "bash": "c", "sh": "c",
              "node": data.draw(st.sampled_from(["e", "p"]))}[kind]
    quoted = "'" + code + "'"
    if not chosen:
        text = f"{kind} -{runner} {quoted}"
    else:
        text = data.draw(st.sampled_from([f"{kind} -{chosen}{runner} {quoted}", f"{kind} -{chosen} -{runner} {quoted}",
                                          f"{kind} -{chosen}{runner}{quoted}"]))
    d = judge(text)
    assert d.action == Action.BLOCK, (text, d.summary())
