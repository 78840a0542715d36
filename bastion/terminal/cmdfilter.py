"""The interactive command filter in the relay: judge the line at Enter, then forward, block or hold it.

It reconstructs the line the target will run twice: from the *output* (pyte fed only with the bytes since the last
newline, prompt stripped: sees Tab completion and history recall) and from the *input* (a small line editor: sees
what was typed even before it is echoed, and every line of a paste). Both are judged; the stricter decision wins.
The engine is told the line was typed at an interactive prompt (``interactive=True``): a bash history designator
(``!!``, ``!chmod:s/600/777/``, ``^old^new``) makes the line opaque, since bash would run another line than the one
judged. Skipped while the alternate screen is active (editors, pagers). A line a rule blocks is refused with one line
naming the rule and its reason; a line a rule warns about gets the same line (``warning (rule 'x'): why``), then runs.

**Lines typed without echo.** A line whose typed text the target never showed (``stty -echo``, a password prompt)
is judged from the input side like any other. What happens to its *text* depends on where it was typed:

- at a *secret prompt*: the last command line released ran ``read -s`` (one line per ``read -s``), or the output
  line looks like a secret prompt (password, passphrase, PIN, token, OTP, verification code ...), it is not the
  prompt the shell showed for that command line, and that line ran a program known to ask for secrets (``sudo``,
  ``su``, ``ssh``, ``passwd``, ``mysql``, ``psql``, ``gpg``, ``git``, an interpreter or a script by path, see
  ``SECRET_PROGRAMS``; a line answering such a program at its own prompt, like a user name, keeps it running;
  before the first command line, login scripts count as one), at most ``SECRET_LINES`` such lines after that
  line (retries). The text never reaches markers, audit events, reviewers or the
  recording (the marker says a secret was withheld); a line there that needs approval is refused (it cannot be
  shown to anyone), a blocked one is refused without the reason (it may quote the text);
- anywhere else it is a command typed with echo off: judged, noted with its text and the mark ``(typed without
  echo)`` (a recording marker, which ``bastion audit search`` finds, and an audit event), and held for reviewers
  like a visible line when its rule asks for approval (the text is recorded anyway; reviewers see the mark).

An operator hiding commands behind ``PS1='Password: '`` and ``stty -echo`` therefore gets them recorded unless the
line before named a secret-asking program and the prompt changed since, and then for ``SECRET_LINES`` lines at
most, still judged, each leaving a "withheld" marker, each batch after a new recorded command line.

This is a guard for fast feedback, not the boundary: aliases, functions, scripts, programs that read commands
themselves (a REPL, ``vi``'s ``:!``) and anything else a shell can do after Enter are invisible to a keystroke
filter. The exec form is judged strictly before anything runs; the protocol proxies are authoritative.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from bastion.terminal.lineedit import MAX_LINE, LineEditor, render_line, strip_prompt
from bastion.terminal.secretprompt import SECRET_LINES, SECRET_PROMPT, UNECHOED, WITHHELD, redacted, secret_asks
from policies.engine import Action, Decision

__all__ = ["SECRET_LINES", "UNECHOED", "WITHHELD", "CommandFilter", "LineEditor", "Verdict", "render_line",
           "secret_asks", "strip_prompt"]

log = logging.getLogger(__name__)

ALT_ON = re.compile(rb"\x1b\[\?(1049|1047|47)h")
ALT_OFF = re.compile(rb"\x1b\[\?(1049|1047|47)l")
PASTE_START, PASTE_END = b"\x1b[200~", b"\x1b[201~"
ECHO_WAIT = 1.0  # seconds to wait for the target to echo a typed line before judging what we have
INTERRUPT = b"\x03"


@dataclass
class Verdict:
    """What the filter decided for one Enter (for tests and markers)."""

    text: str
    decision: Decision


class CommandFilter:
    """Sits between the relay and the active endpoint of a brokered interactive session.

    ``judge`` decides a line; ``forward`` writes to the target; ``to_client`` writes to the operator (recorded);
    ``approve`` holds a decision for reviewers; ``note(text, decision, unechoed)`` records a decision (``unechoed``:
    the line was typed without echo, ``text`` then carries the ``UNECHOED`` mark or is ``WITHHELD``);
    ``asks_secret(line)``: whether a released line may ask for secrets, and how many ``read -s`` it holds
    (``secret_asks`` for a shell).
    """

    def __init__(self, *, cols: int, judge: Callable[[str], Decision], forward: Callable[[bytes], None],
                 to_client: Callable[[bytes], None], approve: Callable[[Decision], Awaitable[dict]],
                 note: Callable[[str, Decision, bool], None], withdraw: Callable[[], None] = lambda: None,
                 echo_wait: float = ECHO_WAIT, asks_secret: Callable[[str], tuple[bool, int]] | None = None):
        self.cols = cols
        self.judge, self.forward, self.to_client = judge, forward, to_client
        self.approve, self.note, self.withdraw = approve, note, withdraw
        self.asks_secret = asks_secret or secret_asks
        self.echo_wait = echo_wait
        self.alt = False
        self.line = bytearray()  # output since the last newline
        self.prompt: str | None = None
        self.editor = LineEditor()
        self.pasting = False
        self.continuation = ""
        self.queue = bytearray()  # client input not yet forwarded (while a line is being judged or held)
        self.busy = False
        self.waiting_echo: asyncio.TimerHandle | None = None
        self.output_since_input = True
        self.verdicts: list[Verdict] = []
        self._rendered: tuple[tuple[bytes, int], str] | None = None
        # the last command line released: the prompt it was typed at, and how many hidden lines after it may be
        # secrets (answers to a program's prompt, or to ``read -s``)
        self.shell_prompt: str | None = None
        self.secret_lines = SECRET_LINES
        self.secret_program = True  # before the first command line: login scripts may ask (ssh-add in .bashrc)
        self.read_secrets = 0

    # -- output -----------------------------------------------------------------------------------------
    def output(self, data: bytes) -> None:
        for m in re.finditer(rb"\x1b\[\?(?:1049|1047|47)[hl]", data):
            self.alt = m.group(0).endswith(b"h")
        self.output_since_input = True
        nl = data.rfind(b"\n")
        if nl >= 0:
            self.line = bytearray(data[nl + 1:])
        else:
            self.line += data
            if len(self.line) > MAX_LINE:
                del self.line[: len(self.line) - MAX_LINE]
        if self.waiting_echo is not None and self._echoed():
            self.waiting_echo.cancel()
            self.waiting_echo = None
            self._decide_enter()

    def _render(self) -> str:
        """The current output line as shown (pyte costs milliseconds: one rendering per state of the line)."""
        key = (bytes(self.line), self.cols)
        if self._rendered is None or self._rendered[0] != key:
            self._rendered = (key, render_line(*key))
        return self._rendered[1]

    # -- input ------------------------------------------------------------------------------------------
    def input(self, data: bytes) -> None:
        if self.busy and INTERRUPT in data:
            self.withdraw()
            data = data.replace(INTERRUPT, b"")
        self.queue += data
        self._pump()

    def resize(self, cols: int) -> None:
        self.cols = cols

    def _pump(self) -> None:
        while self.queue and not self.busy:
            if self.alt:
                self.forward(bytes(self.queue))
                self.queue.clear()
                self.editor.reset()
                return
            i = self._next_enter()
            if i < 0:
                chunk = bytes(self.queue)
                self.queue.clear()
                self._typed(chunk)
                self.output_since_input = False
                self.forward(chunk)
                return
            before = bytes(self.queue[:i])
            del self.queue[:i]
            if before:
                self._typed(before)
                self.output_since_input = False
                self.forward(before)
            self.busy = True
            if self._echoed():
                self._decide_enter()
            else:
                self.waiting_echo = asyncio.get_running_loop().call_later(self.echo_wait, self._echo_timeout)

    def _next_enter(self) -> int:
        """Index of the next Enter outside a bracketed paste; paste markers update the paste state."""
        i, q = 0, self.queue
        while i < len(q):
            if q.startswith(PASTE_START, i):
                self.pasting = True
                i += len(PASTE_START)
                continue
            if q.startswith(PASTE_END, i):
                self.pasting = False
                i += len(PASTE_END)
                continue
            if q[i] in (0x0D, 0x0A) and not self.pasting:
                return i
            i += 1
        return -1

    def _typed(self, data: bytes) -> None:
        if self.prompt is None and data.strip(b"\x1b[200~\x1b[201~"):
            self.prompt = self._render()
        self.editor.feed(data, pasting=self.pasting)

    def _echoed(self) -> bool:
        """Has the target shown what was typed? (then the output-side line is complete enough to judge)"""
        want = re.sub(r"\s+", "", self.editor.text if self.editor.reliable else self.editor.tail)
        if not want:
            return self.output_since_input or not self.editor.typed_any
        shown = re.sub(r"\s+", "", self._render())
        it = iter(shown)
        return all(ch in it for ch in want)

    def _echo_timeout(self) -> None:
        self.waiting_echo = None
        self._decide_enter()

    # -- the decision at Enter --------------------------------------------------------------------------
    def _lines(self) -> list[str]:
        """This physical line as the output shows it (prompt stripped) and, when the editor could follow, as typed.
        A line the target did not echo is judged as typed (its output side is empty, or ``pwfeedback`` stars)."""
        shown = strip_prompt(self._render(), self.prompt)
        typed = self.editor.text.strip() if self.editor.reliable else ""
        if not typed or typed == shown:
            return [shown]
        if self._unechoed() and not shown.strip("*\u2022\u25cf "):
            return [typed]
        return [shown, typed]

    def _texts(self) -> list[str]:
        return [self.continuation + t for t in self._lines()]

    def _unechoed(self) -> bool:
        """Was the line typed without the target showing it (echo off, a password prompt, ``pwfeedback`` stars)?"""
        typed = re.sub(r"\s+", "", self.editor.text) if self.editor.reliable else ""
        shown = re.sub(r"\s+", "", strip_prompt(self._render(), self.prompt))
        return bool(typed) and typed not in shown

    def _at_secret_prompt(self) -> bool:
        """Is this unechoed line the answer to a secret prompt? (see the module docstring); uses up one of the
        lines the last command line allows."""
        if self.read_secrets > 0:
            self.read_secrets -= 1
            return True
        if self.secret_lines <= 0 or not self.secret_program:
            return False
        here = self._render().strip()
        shell = (self.shell_prompt or "").strip()
        if any(p and p != shell and SECRET_PROMPT.search(p) for p in {(self.prompt or "").strip(), here}):
            self.secret_lines -= 1
            return True
        return False

    def _ran(self, texts: list[str], prompt: str) -> None:
        """A line is released: hidden lines after it are secrets only if it may ask for one. A line typed at another
        prompt than the shell's while a secret-asking program runs is an answer to that program (a user name before
        the password, ``yes`` to a host key): the program may still ask, and the shell's prompt is still the one."""
        asks, self.read_secrets = self.asks_secret("\n".join(texts))
        answer = self.secret_program and self.shell_prompt is not None and prompt != self.shell_prompt
        if asks or not answer:
            self.shell_prompt = prompt
        self.secret_program = asks or answer
        self.secret_lines = SECRET_LINES

    def _decide_enter(self) -> None:
        enter = bytes(self.queue[:1])
        del self.queue[:1]
        lines = self._lines()
        texts = [self.continuation + t for t in lines]
        if not any(t.strip() for t in texts):
            if self.editor.typed_any and not self.editor.reliable:  # keys went in, but we cannot see the line
                self._block_unknown()
                return
            self._release(enter)  # an empty line
            return
        prompt = (self.prompt if self.prompt is not None else self._render()).strip()
        hidden = self._unechoed()
        secret = hidden and self._at_secret_prompt()
        if all(t.rstrip().endswith("\\") and not t.rstrip().endswith("\\\\") for t in lines):
            partial = [t.rstrip()[:-1] for t in texts]
            d = max((self.judge(t) for t in partial), key=lambda x: x.action)
            if d.action == Action.BLOCK:
                self._block(redacted(d) if secret else d)
                return
            self.continuation = partial[0] + "\\\n"  # bash reads (and history-expands) the next line on its own
            self._release(enter, keep_continuation=True)
            return
        d = max((self.judge(t) for t in texts), key=lambda x: x.action)
        if secret:  # its text must not reach markers, audit events, reviewers or the recording
            quiet = redacted(d)
            self.verdicts.append(Verdict(WITHHELD, quiet))
            self.note(WITHHELD, quiet, True)
            if d.action == Action.REQUIRE_APPROVAL:
                by = f"rule {d.rule!r}" if d.rule else "the default of the policy"
                self._say(f"this line was typed at a secret prompt and needs approval ({by}); it cannot be shown to "
                          "reviewers, so it was not sent", "1;31")
                self.forward(INTERRUPT)
                self._new_line()
            elif d.action == Action.BLOCK:
                self._block(quiet)
            else:  # an answer to a program, not a command line: the secret budget stays, and no warning is said
                self._release(enter)  # (its reason may name the secret's words)
            return
        self.verdicts.append(Verdict(d.text, d))
        self.note(f"{texts[-1]} {UNECHOED}" if hidden else d.text, d, hidden)  # a command typed blind: recorded
        if d.action in (Action.ALLOW, Action.WARN):
            if d.action == Action.WARN:
                self._warn(d, hidden)
            self._ran(texts, prompt)
            self._release(enter)
        elif d.action == Action.BLOCK:
            self._block(d)
        else:  # reviewers are told how it was typed (the approval stays bound to the text)
            held = replace(d, reason=f"{d.reason} {UNECHOED}") if hidden else d
            asyncio.get_running_loop().create_task(self._hold(held, enter, texts, prompt))

    def _release(self, enter: bytes, keep_continuation: bool = False) -> None:
        self.forward(enter)
        self._new_line(keep_continuation)

    def _new_line(self, keep_continuation: bool = False) -> None:
        self.editor.reset()
        self.prompt = None
        if not keep_continuation:
            self.continuation = ""
        self.busy = False
        self._pump()

    def _say(self, text: str, colour: str) -> None:
        self.to_client(f"\r\n\x1b[{colour}mbastion: {text}\x1b[0m\r\n".encode())

    def _warn(self, d: Decision, hidden: bool) -> None:
        """A warning is said like a block is, then the line runs. For a line typed without echo, its reason (which
        may quote the line's words) stays in the recording and the audit trail, off the screen."""
        if hidden:
            by = f"rule {d.rule!r}" if d.rule else "the default of the policy"
            self._say(f"warning ({by}) on a line typed without echo (its reason is in the recording)", "1;33")
        else:
            self._say(d.warning(), "1;33")

    def _block(self, d: Decision) -> None:
        self._say(d.refusal(), "1;31")
        self.forward(INTERRUPT)  # the target discards the line (and any continuation) and shows a new prompt
        self._new_line()

    def _block_unknown(self) -> None:
        self._say("the bastion could not read this line (no echo from the target); it was not sent", "1;31")
        self.forward(INTERRUPT)
        self._new_line()

    async def _hold(self, d: Decision, enter: bytes, texts: list[str], prompt: str) -> None:
        try:
            result = await self.approve(d)
        except Exception as e:  # RPC/store failure = deny
            log.exception("approval failed")
            result = {"status": "failed", "status_reason": f"approval could not be obtained ({e})"}
        if result.get("status") == "approved":
            current = self._texts()
            if d.text not in current:  # an approval releases only the exact text approved
                self._say("the line changed while waiting; approval not used", "1;31")
                self.forward(INTERRUPT)
                self._new_line()
                return
            self.to_client(f"\x1b[32mbastion: {result.get('status_reason', 'approved')}\x1b[0m\r\n".encode())
            self._ran(texts, prompt)
            self._release(enter)
            return
        self.to_client(f"\x1b[1;31mbastion: request {result.get('status', 'failed')}: "
                       f"{result.get('status_reason', '')}\x1b[0m\r\n".encode())
        self.forward(INTERRUPT)
        self._new_line()
