"""The interactive filter's pieces: input-side editor, output-side rendering, and the Enter decision."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.cmdfilter import CommandFilter, LineEditor, render_line, strip_prompt
from policies.engine import Action, PolicySet, Rule, evaluate

POLICY = PolicySet("p", Action.ALLOW, (
    Rule("no-rm", Action.BLOCK, programs=("rm",), reason="no deleting"),
    Rule("chmod", Action.REQUIRE_APPROVAL, programs=("chmod",)),
))


def test_line_editor_keys() -> None:
    e = LineEditor()
    e.feed(b"ls -la\x7f\x7fl")
    assert e.text == "ls -l" and e.reliable
    e.feed(b"\x01rm \x05 x")  # home, insert, end
    assert e.text == "rm ls -l x"
    e.feed(b"\x17\x17")  # ctrl-w twice
    assert e.text == "rm ls "
    e.feed(b"\x1b[D\x1b[D\x1b[3~")  # left left delete
    assert e.text == "rm l "
    e.feed(b"\x15chmod 600 f")  # ctrl-u
    assert e.text == "chmod 600 f " and e.tail == "chmod 600 f"  # ^U kills left of the cursor only
    e.feed(b"\t")
    assert not e.reliable and e.tail == ""
    e2 = LineEditor()
    e2.feed(b"\x1b[A")
    assert not e2.reliable


def test_render_and_strip_prompt() -> None:
    out = b"\x1b[?2004huser@host:~$ rm -rf /tm\x08\x08\x1b[Kx"
    line = render_line(out, 80)
    assert line == "user@host:~$ rm -rf /x"
    assert strip_prompt(line, "user@host:~$ ") == "rm -rf /x"
    assert strip_prompt("odd> ls", None) == "ls"
    assert strip_prompt("(reverse-i-search)`rm': rm -rf /", "$ ") == "rm -rf /"
    wrapped = render_line(b"$ " + b"a" * 100, 40)  # wrapped rows are one line
    assert wrapped == "$ " + "a" * 100


class Harness:
    """A CommandFilter wired to fakes that behave like a target with echo on."""

    def __init__(self, *, echo: bool = True, approval: str = "approved"):
        self.sent = bytearray()
        self.client = bytearray()
        self.notes: list[tuple[str, Any]] = []
        self.approval = approval
        self.echo = echo
        self.f = CommandFilter(cols=80, judge=lambda t: evaluate(POLICY, t, groups=[], resource="r"),
                               forward=self.forward, to_client=self.client.extend, approve=self.approve,
                               note=lambda text, d: self.notes.append((text, d.action)), echo_wait=0.05)
        self.f.output(b"$ ")

    def forward(self, data: bytes) -> None:
        self.sent += data
        if self.echo:
            echo = data.replace(b"\r", b"\r\n").replace(b"\x03", b"^C\r\n$ ")
            self.f.output(echo if b"\r" not in data else echo + b"$ ")

    async def approve(self, d: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"status": self.approval, "status_reason": f"{self.approval} by bob"}


async def settle() -> None:
    for _ in range(12):
        await asyncio.sleep(0.01)


async def test_filter_allows_blocks_and_holds() -> None:
    h = Harness()
    h.f.input(b"ls -la\r")
    await settle()
    assert h.sent == b"ls -la\r"
    h.f.input(b"rm -rf /\r")
    await settle()
    assert h.sent.endswith(b"rm -rf /\x03") and b"blocked by rule 'no-rm'" in h.client
    h.f.input(b"chmod 600 f\r")
    await settle()
    assert h.sent.endswith(b"chmod 600 f\r") and b"approved by bob" in h.client
    h2 = Harness(approval="denied")
    h2.f.input(b"chmod 600 f\r")
    await settle()
    assert h2.sent.endswith(b"chmod 600 f\x03") and b"request denied" in h2.client
    assert [a for _, a in h.notes] == [Action.ALLOW, Action.BLOCK, Action.REQUIRE_APPROVAL]


async def test_each_line_of_a_paste_is_judged() -> None:
    h = Harness()
    h.f.input(b"echo one\recho two\rrm x\recho four\r")
    await settle()
    assert b"echo one\r" in h.sent and b"echo two\r" in h.sent
    assert b"rm x\x03" in h.sent and b"echo four\r" in h.sent


async def test_unechoed_input_is_judged_but_not_recorded() -> None:
    h = Harness(echo=False)
    h.f.input(b"rm -rf /\r")  # no echo (e.g. a password prompt): the typed text is still judged
    await settle()
    assert h.sent.endswith(b"\x03")
    assert h.notes and h.notes[0][0] == "(typed without echo: not recorded)"


async def test_backslash_continuation_is_judged_as_a_whole() -> None:
    h = Harness()
    h.f.input(b"echo \\\r")
    await settle()
    assert h.sent == b"echo \\\r"  # nothing runs yet: let the shell continue the line
    h.f.output(b"> ")
    h.f.input(b"hello\r")
    await settle()
    assert h.sent.endswith(b"hello\r")
    h.f.input(b"rm \\\r")  # a partial line that is already blocked is stopped at once
    await settle()
    assert h.sent.endswith(b"rm \\\x03")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"r", b"m", b" ", b"-", b"x", b"\x7f", b"\x15", b"\x17", b"\x1b[D", b"\x1b[C",
                                 b"\x01", b"\x05", b"\t", b"\x1b[A", b"\x1b", b"c", b"h", b"o", b"d", b"\xff"]),
                max_size=25))
def test_editor_and_renderer_never_crash(keys: list[bytes]) -> None:
    e = LineEditor()
    for k in keys:
        e.feed(k)
    assert isinstance(e.text, str)
    render_line(b"$ " + b"".join(keys), 40)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from([b"l", b"s", b" ", b"\x7f", b"\x15", b"\x17", b"\x1b[D", b"\x01", b"\x05"]),
                max_size=15))
def test_a_visible_rm_line_is_never_sent(noise: list[bytes]) -> None:
    """Whatever was typed and edited before, ^U then a blocked command is never released."""
    async def run() -> bytes:
        h = Harness()
        h.f.input(b"".join(noise) + b"\x15rm -f x\r")
        await settle()
        return bytes(h.sent)

    sent = asyncio.run(run())
    assert not sent.endswith(b"\r") and sent.endswith(b"\x03")
