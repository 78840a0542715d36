"""The interactive filter's pieces: input-side editor, output-side rendering, and the Enter decision."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.terminal.cmdfilter import (
    SECRET_LINES,
    UNECHOED,
    WITHHELD,
    CommandFilter,
    LineEditor,
    render_line,
    secret_asks,
    strip_prompt,
)
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
    """A CommandFilter wired to fakes that behave like a target with echo on (``echo``: it shows what it gets).

    ``prompt`` is what the fake shell prints after each line it runs (after a ^C too)."""

    def __init__(self, *, echo: bool = True, approval: str = "approved", prompt: bytes = b"$ "):
        self.sent = bytearray()
        self.client = bytearray()
        self.notes: list[tuple[str, Any, bool]] = []
        self.asked: list[Any] = []
        self.approval = approval
        self.echo = echo
        self.prompt = prompt
        self.f = CommandFilter(cols=80, judge=lambda t: evaluate(POLICY, t, groups=[], resource="r",
                                                                 interactive=True),
                               forward=self.forward, to_client=self.client.extend, approve=self.approve,
                               note=lambda text, d, unechoed: self.notes.append((text, d.action, unechoed)),
                               echo_wait=0.05)
        self.f.output(prompt)

    def forward(self, data: bytes) -> None:
        self.sent += data
        if b"\x03" in data:
            self.f.output(b"^C\r\n" + self.prompt)
        elif self.echo:
            echo = data.replace(b"\r", b"\r\n")
            self.f.output(echo if b"\r" not in data else echo + self.prompt)
        elif b"\r" in data:
            self.f.output(b"\r\n" + self.prompt)

    async def approve(self, d: Any) -> dict[str, Any]:
        self.asked.append(d)
        await asyncio.sleep(0)
        return {"status": self.approval, "status_reason": f"{self.approval} by bob"}

    def recorded(self) -> str:
        """Everything that leaves the filter for markers, audit events, reviewers and the operator's terminal."""
        return repr(self.notes) + repr(self.asked) + self.client.decode() + repr(self.f.verdicts)


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
    assert [a for _, a, _ in h.notes] == [Action.ALLOW, Action.BLOCK, Action.REQUIRE_APPROVAL]


async def test_each_line_of_a_paste_is_judged() -> None:
    h = Harness()
    h.f.input(b"echo one\recho two\rrm x\recho four\r")
    await settle()
    assert b"echo one\r" in h.sent and b"echo two\r" in h.sent
    assert b"rm x\x03" in h.sent and b"echo four\r" in h.sent


async def test_a_command_typed_without_echo_is_judged_and_noted_with_its_text() -> None:
    h = Harness(echo=False)  # stty -echo at the shell prompt: the target shows nothing of what is typed
    h.f.input(b"touch marker\r")
    await settle()
    assert h.sent == b"touch marker\r"
    assert h.notes == [(f"touch marker {UNECHOED}", Action.ALLOW, True)]
    h.f.input(b"rm -rf /\r")
    await settle()
    assert h.sent.endswith(b"rm -rf /\x03") and b"blocked by rule 'no-rm'" in h.client
    assert h.notes[-1] == (f"rm -rf / {UNECHOED}", Action.BLOCK, True)


async def test_a_command_typed_without_echo_may_be_held_for_approval() -> None:
    """Its text is recorded anyway, so reviewers may see it (they are told it was typed without echo)."""
    h = Harness(echo=False)
    h.f.input(b"chmod 600 f\r")
    await settle()
    assert h.sent.endswith(b"chmod 600 f\r") and b"approved by bob" in h.client
    assert [d.text for d in h.asked] == ["chmod 600 f"] and UNECHOED in h.asked[0].reason
    h2 = Harness(echo=False, approval="denied")
    h2.f.input(b"chmod 600 f\r")
    await settle()
    assert h2.sent.endswith(b"\x03") and not h2.sent.endswith(b"\r")


async def answer_sudo(h: Harness, password: bytes) -> None:
    """The target asks for a password on a fresh line, with echo off; the operator types ``password``."""
    h.f.output(b"[sudo] password for alice: ")
    h.echo = False
    h.f.input(password + b"\r")
    await settle()


async def test_a_password_after_sudo_is_judged_but_never_recorded() -> None:
    h = Harness(prompt=b"alice@web:~$ ")
    h.prompt = b""  # sudo runs: no shell prompt after its line, nor after the password
    h.f.input(b"sudo true\r")
    await settle()
    await answer_sudo(h, b"hunter2-Sup3r")
    assert h.sent.endswith(b"hunter2-Sup3r\r")
    assert h.notes[-1] == (WITHHELD, Action.ALLOW, True)
    assert "hunter2" not in h.recorded()


async def test_a_secret_is_refused_without_its_text_when_it_needs_approval_or_is_blocked() -> None:
    h = Harness()
    h.prompt = b""
    h.f.input(b"sudo -v\r")
    await settle()
    await answer_sudo(h, b"chmod 777 pw")  # a password that parses as a held command: it cannot go to reviewers
    assert h.sent.endswith(b"\x03") and not h.asked and b"cannot be shown to reviewers" in h.client
    await answer_sudo(h, b"rm pw-rm-secret")  # blocked: the rule is named, the reason (which quotes words) is not
    assert h.sent.endswith(b"\x03") and b"blocked by rule 'no-rm'" in h.client
    assert "pw-rm-secret" not in h.recorded() and "777 pw" not in h.recorded()
    assert [n for n in h.notes if n[2]] == [(WITHHELD, Action.REQUIRE_APPROVAL, True), (WITHHELD, Action.BLOCK, True)]


async def test_only_a_few_hidden_lines_after_a_secret_asking_program_are_secrets() -> None:
    h = Harness()
    h.prompt = b""
    h.f.input(b"sudo true\r")
    await settle()
    for n in range(SECRET_LINES):
        await answer_sudo(h, f"wrong-{n}".encode())
    await answer_sudo(h, b"touch hidden-marker")  # a fourth line at the same prompt: a command, recorded
    assert [t for t, _, _ in h.notes[1:]] == [WITHHELD] * SECRET_LINES + [f"touch hidden-marker {UNECHOED}"]
    assert "wrong-" not in h.recorded()


async def test_a_fake_password_prompt_does_not_hide_commands() -> None:
    """PS1='Password: ' and stty -echo: without a secret-asking program before, every hidden line is a command."""
    h = Harness()
    h.f.input(b"PS1='Password: '; stty -echo\r")
    await settle()
    h.prompt, h.echo = b"Password: ", False
    h.f.output(b"\r\nPassword: ")
    for n in range(5):
        h.f.input(f"touch m{n}\r".encode())
        await settle()
    assert [t for t, _, _ in h.notes[1:]] == [f"touch m{n} {UNECHOED}" for n in range(5)]


async def test_a_fake_password_prompt_that_is_the_shell_prompt_does_not_hide_commands() -> None:
    """A secret-asking program typed at the shell's own 'Password: ' prompt: hidden lines at that same prompt are
    commands (the shell is back at its prompt, not the program)."""
    h = Harness(prompt=b"Password: ")
    h.f.input(b"sudo -n true\r")
    await settle()
    h.echo = False
    h.f.input(b"touch m1\r")
    await settle()
    assert h.notes[-1] == (f"touch m1 {UNECHOED}", Action.ALLOW, True)


async def test_a_visible_answer_to_a_program_keeps_its_password_prompt_a_secret() -> None:
    """git asks for a user name (echoed), then a password (not echoed); back at the shell prompt, hidden lines at
    a prompt that only looks like a password prompt are commands again."""
    h = Harness()
    h.prompt = b""
    h.f.input(b"git push\r")
    await settle()
    h.f.output(b"Username for 'https://example.org': ")
    h.f.input(b"alice\r")
    await settle()
    h.f.output(b"Password for 'https://alice@example.org': ")
    h.echo = False
    h.f.input(b"gh-Secret-123\r")
    await settle()
    assert h.notes[-1] == (WITHHELD, Action.ALLOW, True) and "gh-Secret" not in h.recorded()
    h.prompt, h.echo = b"$ ", True
    h.f.output(b"\r\n$ ")
    h.f.input(b"ls\r")  # at the shell's prompt again: a new command line
    await settle()
    h.echo = False
    h.f.output(b"\r\nPassword: ")  # something prints a lookalike; nothing that asks was run
    h.f.input(b"touch x\r")
    await settle()
    assert h.notes[-1] == (f"touch x {UNECHOED}", Action.ALLOW, True)


async def test_read_s_takes_one_hidden_line_whatever_its_prompt() -> None:
    h = Harness()
    h.f.input(b"read -rs PW; echo ${#PW}\r")
    await settle()
    h.echo = False
    h.f.output(b"\r\n")  # read -s without a prompt: an empty line
    h.f.input(b"s3cr3t-value\r")
    await settle()
    h.f.input(b"touch after\r")
    await settle()
    assert [t for t, _, _ in h.notes[1:]] == [WITHHELD, f"touch after {UNECHOED}"]
    assert "s3cr3t" not in h.recorded()


async def test_pwfeedback_stars_are_not_judged_as_a_command() -> None:
    h = Harness()
    h.prompt = b""
    h.f.input(b"sudo true\r")
    await settle()
    h.echo = False
    h.f.output(b"[sudo] password for alice: ")
    h.f.input(b"pw")
    h.f.output(b"**")
    h.f.input(b"\r")
    await settle()
    assert h.notes[-1] == (WITHHELD, Action.ALLOW, True) and h.sent.endswith(b"pw\r")


def test_secret_asks() -> None:
    cases = {
        "sudo true": (True, 0), "ls -la": (False, 0), "./deploy.sh prod": (True, 0), "mysql -p db": (True, 0),
        "cd /tmp && /usr/bin/ssh host": (True, 0), "read -rsp 'Password: ' PW": (False, 1),
        "read -p 'a -s b' -s v": (False, 1), "read -p -s v": (False, 0), "read -t 5 x": (False, 0),
        "read -s a; read -s b": (False, 2), "echo 'unclosed sudo": (True, 0),
        "PS1='Password: '; stty -echo": (False, 0), "cat /etc/hosts": (False, 0), "ls; ./x": (True, 0),
        "deploy.sh": (True, 0), "echo deploy.sh": (False, 0),
    }
    for line, want in cases.items():
        assert secret_asks(line) == want, line


async def test_history_designators_are_not_released() -> None:
    """The line bash would run is not the line typed: the engine makes it opaque (strictest action: block here)."""
    for line in (b"!!", b"!chm:s/600/777/", b"^600^777", b"echo \"!!\""):
        h = Harness()
        h.f.input(b"echo X\r")
        await settle()
        h.f.input(line + b"\r")
        await settle()
        assert h.sent.endswith(b"\x03"), line
    h = Harness()
    h.f.input(b"[ ! -f x ] && echo 'hi!'\r")  # not a designator
    await settle()
    assert h.sent.endswith(b"'hi!'\r")


async def test_a_designator_on_a_continuation_line_is_seen() -> None:
    h = Harness()
    h.f.input(b"echo \\\r")
    await settle()
    h.f.output(b"> ")
    h.f.input(b"^a^b\r")  # bash history-expands each physical line: this one is a quick substitution
    await settle()
    assert h.sent.endswith(b"\x03")


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
