"""The grammar of ``ssh bastion review|approve|deny`` (bastion/ssh/review.py): what parses, what is refused, and
that a reason arrives whole whatever ssh's word joining did to it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.ssh.review import ReviewCommand, UsageError, parse


@pytest.mark.parametrize(("word", "rest", "want"), [
    ("review", None, ReviewCommand("review")),
    ("review", "--json", ReviewCommand("review", json=True)),
    ("review", "12", ReviewCommand("review", 12)),
    ("approve", "7", ReviewCommand("approve", 7)),
    ("approve", "7 --reason checked the ticket", ReviewCommand("approve", 7, "checked the ticket")),
    ("approve", "7 --reason=ok", ReviewCommand("approve", 7, "ok")),
    ("deny", "7 -r no", ReviewCommand("deny", 7, "no")),
    ("deny", "7 --reason don't, not now", ReviewCommand("deny", 7, "don't, not now")),
    ("deny", "7 --reason \"quoted whole\"", ReviewCommand("deny", 7, "quoted whole")),
    ("deny", "--reason first then 7", None),        # everything after --reason is the reason: no request left
])
def test_parse(word: str, rest: str | None, want: ReviewCommand | None) -> None:
    if want is None:
        with pytest.raises(UsageError):
            parse(word, rest)
    else:
        assert parse(word, rest) == want


@pytest.mark.parametrize(("word", "rest"), [
    ("approve", ""), ("approve", "x"), ("approve", "-1"), ("approve", "1 2"), ("approve", "1 --force"),
    ("approve", "1 --json"), ("review", "--reason x"), ("review", "1 2"), ("deny", "1"), ("deny", "1 --reason"),
    ("deny", "1 --reason ''"), ("approve", "1234567890123"), ("approve", "'1"), ("approve", "１"),
    # the reason reaches the requester's terminal: no escape sequence, no line of its own, no essay
    ("deny", "1 --reason \x1b[2Jcleared"), ("deny", "1 --reason two\nlines"), ("approve", "1 -r \u202eevil"),
    ("deny", "1 --reason " + "x" * 501),
])
def test_refused(word: str, rest: str) -> None:
    with pytest.raises(UsageError):
        parse(word, rest)


@settings(max_examples=500, deadline=None)
@given(word=st.sampled_from(["review", "approve", "deny"]),
       parts=st.lists(st.sampled_from(["1", "42", "--json", "--reason", "-r", "--reason=x", "'", "\"", "a b",
                                       "--", "-", "x", "don't", "\x1b[2J", "007", "\n"]), max_size=6))
def test_anything_parses_to_a_well_formed_command_or_a_usage_error(word: str, parts: list[str]) -> None:
    """Whatever words an operator (or an attacker) sends, the parser answers with a command whose request is a
    number (always, to decide), whose deny has a reason, and that came from the words given; or a usage error."""
    rest = " ".join(parts)
    try:
        cmd = parse(word, rest)
    except UsageError:
        return
    assert cmd.word == word
    if word != "review":
        assert isinstance(cmd.request, int)
        assert str(cmd.request) in rest or f"{cmd.request:03d}" in rest
    if word == "deny":
        assert cmd.reason.strip()
    if cmd.reason:
        assert cmd.reason in rest or cmd.reason in rest.replace("'", "").replace('"', "")
