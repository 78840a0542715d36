"""The shell classifier and the policy engine: spellings, wrappers, opaque constructs, order, explanations."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.engine import Action, PolicySet, Rule, evaluate
from policies.shell import ShellParseError, parse_line

DEMO = PolicySet("demo", Action.ALLOW, (
    Rule("admins-may-rm", Action.ALLOW, programs=("rm",), groups=("admins",)),
    Rule("no-rm", Action.BLOCK, programs=("rm", "unlink", "shred"), reason="no deleting"),
    Rule("no-find-delete", Action.BLOCK, programs=("find",), args=("-delete",)),
    Rule("chmod", Action.REQUIRE_APPROVAL, programs=("chmod",), approver_roles=("reviewers",), approvals=2),
    Rule("curl-warn", Action.WARN, programs=("curl",)),
    Rule("no-drop", Action.BLOCK, command=re.compile(r"\bdrop\s+table\b", re.I)),
))


def decide(cmd: str, groups: tuple[str, ...] = ("ops",)) -> tuple[str, str | None]:
    d = evaluate(DEMO, cmd, groups=groups, resource="demo-shell")
    return d.action.label, d.rule


@pytest.mark.parametrize("cmd", [
    "rm -f /tmp/x", "/bin/rm -f /tmp/x", "\\rm /tmp/x", "command rm /tmp/x", "sudo rm /tmp/x", "$(echo rm) /tmp/x",
    "r''m /tmp/x", '"rm" x', "sudo -u root env A=1 nohup /usr/bin/rm -rf /", "ls | xargs rm", "ls; rm x",
    "true && rm x", "false || rm x", "(rm x)", "{ rm x; }", "if true; then rm x; fi", "for f in a; do rm $f; done",
    "while true; do rm x; done", "find . -exec rm {} \\;", "timeout 5 rm x", "busybox rm x", "nice -n 5 rm x",
    "exec rm x", "env -i rm x", "sudo -- rm x", "`echo rm` x", "x=1 rm x", "rm\\\nx", "echo ok & rm x",
    "unlink x", "find / -delete", "$RM x", "${RM} x", "/bin/r? x", "r{m,} x", "eval rm x", "sh -c 'rm x'",
    "bash -lc 'rm x'", "curl http://x | sh", "python3 -c 'import os; os.remove(\"x\")'", "perl -e 'unlink 1'",
    "f() { rm x; }; f", "cat <<EOF", "echo $(rm x)", "source ./script", ". ./script", "env -S 'rm x'",
    "alias r=rm", "sudo rm x 2>/dev/null", "rm 'unterminated",
])
def test_rm_blocked_in_every_spelling(cmd: str) -> None:
    assert decide(cmd)[0] == "block", cmd


@pytest.mark.parametrize("cmd", [
    "ls -la", "echo rm", "echo 'rm -rf /'", "grep rm file", "cat rm.txt", "whatis rm", "command -v rm",
    "ls > rm", "echo x # rm comment", "printf '%s' \"$(", "",
])
def test_harmless_or_fail_closed(cmd: str) -> None:
    action, _ = decide(cmd)
    if cmd == "printf '%s' \"$(":
        assert action == "block"  # unparsable: refused
    else:
        assert action == "allow", cmd


def test_pagers_are_opaque_only_with_a_terminal() -> None:
    # ``man`` pages through less, whose ``!cmd`` runs a command: only when a terminal is attached
    assert evaluate(DEMO, "man rm", groups=["ops"], resource="r", terminal=False).action == Action.ALLOW
    assert evaluate(DEMO, "man rm", groups=["ops"], resource="r", terminal=True).action == Action.BLOCK
    # typed at an interactive prompt, the line filter is a guard: a pager is what the operator asked for
    assert evaluate(DEMO, "man rm", groups=["ops"], resource="r", interactive=True).action == Action.ALLOW


def test_first_match_wins_group_scoped_rules_and_strictest_overall() -> None:
    assert decide("rm x", ("admins",)) == ("allow", "admins-may-rm")
    assert decide("chmod 600 f") == ("require_approval", "chmod")
    assert decide("chmod 600 f; rm x") == ("block", "no-rm")
    assert decide("curl -s x") == ("warn", "curl-warn")
    assert decide("psql -c 'DROP  TABLE t'")[1] == "no-drop"


def test_decisions_explain_themselves() -> None:
    d = evaluate(DEMO, "chmod 600 f && ls", groups=["ops"], resource="r")
    assert d.approvals == 2 and d.approver_roles == ("reviewers",)
    assert any("chmod: rule 'chmod'" in line for line in d.explanation)
    assert any("ls: no rule" in line for line in d.explanation)
    d = evaluate(DEMO, "$(x)", groups=["ops"], resource="r")
    assert "cannot see through command substitution" in d.reason
    assert d.summary().startswith("block by rule 'no-rm'")


def test_opaque_takes_strictest_of_the_set_not_more() -> None:
    lenient = PolicySet("lenient", Action.ALLOW, (Rule("ap", Action.REQUIRE_APPROVAL, programs=("chmod",)),))
    assert evaluate(lenient, "eval ls", groups=[], resource="r").action == Action.REQUIRE_APPROVAL
    assert evaluate(PolicySet("open"), "eval ls", groups=[], resource="r").action == Action.ALLOW
    assert evaluate(PolicySet("open"), "echo 'x", groups=[], resource="r").action == Action.BLOCK


def test_parser_wrappers_and_errors() -> None:
    cmds = parse_line("sudo -u root -- env -u X FOO=1 nice -n 5 /usr/bin/chmod 600 f | tee out").commands
    assert [(c.program, c.args, c.wrappers) for c in cmds] == [
        ("chmod", ("600", "f"), ("sudo", "env", "nice")), ("tee", ("out",), ())]
    for bad in ("echo 'x", 'echo "x', "ls |", "&& ls", "(ls", "ls)", "echo $(ls", "echo \x00"):
        with pytest.raises(ShellParseError):
            parse_line(bad)


shell_text = st.lists(st.sampled_from(list("rmlsabc -_/.;|&()$`'\"\\*?{}[]<>#=\n\t")
                                     + ["rm ", "sudo ", "$(", "eval ", "chmod ", "; ", " | "]),
                      max_size=30).map("".join)


@settings(max_examples=400, deadline=None)
@given(prefix=shell_text, suffix=shell_text)
def test_never_crashes_and_never_allows_a_visible_rm(prefix: str, suffix: str) -> None:
    """Whatever surrounds it, a line that runs rm as a command after a separator is never allowed."""
    text = f"{prefix}\nrm -rf /tmp/x\n{suffix}"
    d = evaluate(DEMO, text, groups=["ops"], resource="demo-shell")  # must not raise
    try:
        runs_rm = any(c.program == "rm" for c in parse_line(text).commands)
    except ShellParseError:
        runs_rm = False
    if runs_rm:
        assert d.action == Action.BLOCK, text


@settings(max_examples=400, deadline=None)
@given(text=shell_text)
def test_decision_is_never_laxer_than_any_command_it_contains(text: str) -> None:
    d = evaluate(DEMO, text, groups=["ops"], resource="demo-shell")
    try:
        line = parse_line(text)
    except ShellParseError:
        assert d.action == Action.BLOCK
        return
    for cmd in line.commands:
        single = evaluate(DEMO, text, groups=["ops"], resource="demo-shell")
        rule = next((r for r in DEMO.rules if r.applies_to(frozenset({"ops"}), "demo-shell") and r.matches(cmd)),
                    None)
        assert d.action >= (rule.action if rule else DEMO.default), (text, cmd)
        assert single == d  # deterministic
