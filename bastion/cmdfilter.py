"""The interactive command filter in the relay: judge the line at Enter, then forward, block or hold it.

It reconstructs the line the target will run twice: from the *output* (pyte fed only with the bytes since the last
newline, prompt stripped: sees Tab completion and history recall) and from the *input* (a small line editor: sees
what was typed even before it is echoed, and every line of a paste). Both are judged; the stricter decision wins.
Skipped while the alternate screen is active (editors, pagers) or echo is off (passwords).

This is a guard for fast feedback, not the boundary: aliases, functions, scripts, `stty -echo`, programs that read
commands themselves (a REPL, `vi`'s `:!`) and anything else a shell can do after Enter are invisible to a keystroke
filter. The exec form is judged strictly before anything runs; the protocol proxies are authoritative.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import pyte

from policies.engine import Action, Decision

log = logging.getLogger(__name__)

ALT_ON = re.compile(rb"\x1b\[\?(1049|1047|47)h")
ALT_OFF = re.compile(rb"\x1b\[\?(1049|1047|47)l")
PASTE_START, PASTE_END = b"\x1b[200~", b"\x1b[201~"
ECHO_WAIT = 1.0  # seconds to wait for the target to echo a typed line before judging what we have
MAX_LINE = 16384
INTERRUPT = b"\x03"


@dataclass
class Verdict:
    """What the filter decided for one Enter (for tests and markers)."""

    text: str
    decision: Decision


class LineEditor:
    """Input-side reconstruction of a readline-style line; ``reliable`` drops when history/completion is used."""

    def __init__(self) -> None:
        self.buf: list[str] = []
        self.pos = 0
        self.reliable = True
        self.typed_any = False
        self.tail = ""  # printable text typed since the last editing key: the part whose echo we can check
        self._esc = b""

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    @property
    def text(self) -> str:
        return "".join(self.buf)

    def feed(self, data: bytes, pasting: bool = False) -> None:
        text = (self._esc + data).decode("utf-8", "replace")
        self._esc = b""
        i = 0
        while i < len(text):
            c = text[i]
            if c == "\x1b":
                m = re.match(r"\x1b(\[[0-9;]*[~A-Za-z]|O[A-Za-z]|.)?", text[i:])
                seq = m.group(0) if m else "\x1b"
                if len(seq) == 1 and i == len(text) - 1:
                    self._esc = b"\x1b"
                    return
                self._escape(seq)
                i += len(seq)
                continue
            if c.isprintable() and c != "\x1b":
                self.tail += c
                self.typed_any = True
            elif c not in ("\r", "\n"):
                self.tail = ""
            if c in ("\x7f", "\x08"):
                if self.pos > 0:
                    del self.buf[self.pos - 1]
                    self.pos -= 1
            elif c == "\x15":  # ^U
                del self.buf[: self.pos]
                self.pos = 0
            elif c == "\x0b":  # ^K
                del self.buf[self.pos:]
            elif c == "\x17":  # ^W
                j = self.pos
                while j > 0 and self.buf[j - 1] == " ":
                    j -= 1
                while j > 0 and self.buf[j - 1] != " ":
                    j -= 1
                del self.buf[j: self.pos]
                self.pos = j
            elif c == "\x01":
                self.pos = 0
            elif c == "\x05":
                self.pos = len(self.buf)
            elif c == "\x02":
                self.pos = max(0, self.pos - 1)
            elif c == "\x06":
                self.pos = min(len(self.buf), self.pos + 1)
            elif c in ("\r", "\n") and pasting:
                self.buf.insert(self.pos, "\n")
                self.pos += 1
            elif c in ("\t", "\x10", "\x0e", "\x12", "\x13", "\x19", "\x14"):  # completion, history, yank, transpose
                self.reliable = False
            elif c.isprintable():
                self.buf.insert(self.pos, c)
                self.pos += 1
            i += 1

    def _escape(self, seq: str) -> None:
        if seq not in ("\x1b[200~", "\x1b[201~"):
            self.tail = ""
        if seq in ("\x1b[D", "\x1bOD"):
            self.pos = max(0, self.pos - 1)
        elif seq in ("\x1b[C", "\x1bOC"):
            self.pos = min(len(self.buf), self.pos + 1)
        elif seq in ("\x1b[H", "\x1bOH", "\x1b[1~"):
            self.pos = 0
        elif seq in ("\x1b[F", "\x1bOF", "\x1b[4~"):
            self.pos = len(self.buf)
        elif seq == "\x1b[3~":
            if self.pos < len(self.buf):
                del self.buf[self.pos]
        elif seq in ("\x1b[200~", "\x1b[201~"):
            pass
        else:  # up/down (history), alt-anything: we no longer know the line from the input alone
            self.reliable = False


def render_line(data: bytes, cols: int) -> str:
    """The text a terminal shows for ``data`` written from the start of a line (wrapped rows joined)."""
    screen = pyte.Screen(max(cols, 20), 64)
    stream = pyte.ByteStream(screen)
    stream.feed(data[-MAX_LINE:])
    rows = [screen.display[y] for y in range(0, screen.cursor.y + 1)]
    out = ""
    for row in rows:
        out += row if len(row.rstrip()) >= screen.columns else row.rstrip() + "\n"
    return out.rstrip("\n").rstrip()


def strip_prompt(line: str, prompt: str | None) -> str:
    """The command part of a rendered line."""
    if prompt and line.startswith(prompt.rstrip()) and prompt.rstrip():
        return line[len(prompt.rstrip()):].strip()
    m = re.match(r"^\(reverse-i-search\)`[^']*': (.*)$", line)
    if m:
        return m.group(1).strip()
    m = re.match(r"^[^\s]*?[$#%>] (.*)$", line)
    return (m.group(1) if m else line).strip()


class CommandFilter:
    """Sits between the relay and the active endpoint of a brokered interactive session."""

    def __init__(self, *, cols: int, judge: Callable[[str], Decision], forward: Callable[[bytes], None],
                 to_client: Callable[[bytes], None], approve: Callable[[Decision], Awaitable[dict]],
                 note: Callable[[str, Decision], None], echo_known: Callable[[], bool | None] = lambda: None,
                 withdraw: Callable[[], None] = lambda: None, echo_wait: float = ECHO_WAIT):
        self.cols = cols
        self.judge, self.forward, self.to_client = judge, forward, to_client
        self.approve, self.note, self.echo_known, self.withdraw = approve, note, echo_known, withdraw
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
            if self.alt or self.echo_known() is False:
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
            self.prompt = render_line(bytes(self.line), self.cols)
        self.editor.feed(data, pasting=self.pasting)

    def _echoed(self) -> bool:
        """Has the target shown what was typed? (then the output-side line is complete enough to judge)"""
        want = re.sub(r"\s+", "", self.editor.text if self.editor.reliable else self.editor.tail)
        if not want:
            return self.output_since_input or not self.editor.typed_any
        shown = re.sub(r"\s+", "", render_line(bytes(self.line), self.cols))
        it = iter(shown)
        return all(ch in it for ch in want)

    def _echo_timeout(self) -> None:
        self.waiting_echo = None
        self._decide_enter()

    # -- the decision at Enter --------------------------------------------------------------------------
    def _texts(self) -> list[str]:
        shown = strip_prompt(render_line(bytes(self.line), self.cols), self.prompt)
        texts = [shown]
        typed = self.editor.text
        if self.editor.reliable and typed.strip() and typed.strip() != shown:
            texts.append(typed.strip())
        return [self.continuation + t for t in texts]

    def _decide_enter(self) -> None:
        enter = bytes(self.queue[:1])
        del self.queue[:1]
        texts = self._texts()
        if not any(t.strip() for t in texts):
            if self.editor.typed_any and not self.editor.reliable:  # keys went in, but we cannot see the line
                self._block_unknown()
                return
            self._release(enter)  # an empty line
            return
        if all(t.rstrip().endswith("\\") and not t.rstrip().endswith("\\\\") for t in texts):
            partial = [t.rstrip()[:-1] for t in texts]
            d = max((self.judge(t) for t in partial), key=lambda x: x.action)
            if d.action == Action.BLOCK:
                self._block(d)
                return
            self.continuation = partial[0]
            self._release(enter, keep_continuation=True)
            return
        d = max((self.judge(t) for t in texts), key=lambda x: x.action)
        visible = d.text == texts[0] or bool(texts[0].strip()) and d.text.strip() in texts[0]
        self.verdicts.append(Verdict(d.text, d))
        # text the target never echoed (a password) must not reach markers, audit events or reviewers
        hidden = "(typed without echo: not recorded)"
        self.note(d.text, d) if visible else self.note(hidden, replace(d, text=hidden, reason=hidden, explanation=()))
        if not visible and d.action == Action.REQUIRE_APPROVAL:
            self._block_unknown()
            return
        if d.action in (Action.ALLOW, Action.WARN):
            self._release(enter)
        elif d.action == Action.BLOCK:
            self._block(d)
        else:
            asyncio.get_running_loop().create_task(self._hold(d, enter))

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

    def _block(self, d: Decision) -> None:
        self._say(f"blocked by rule {d.rule!r}: {d.reason}" if d.rule else f"blocked: {d.reason}", "1;31")
        self.forward(INTERRUPT)  # the target discards the line (and any continuation) and shows a new prompt
        self._new_line()

    def _block_unknown(self) -> None:
        self._say("the bastion could not read this line (no echo from the target); it was not sent", "1;31")
        self.forward(INTERRUPT)
        self._new_line()

    async def _hold(self, d: Decision, enter: bytes) -> None:
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
            self._release(enter)
            return
        self.to_client(f"\x1b[1;31mbastion: request {result.get('status', 'failed')}: "
                       f"{result.get('status_reason', '')}\x1b[0m\r\n".encode())
        self.forward(INTERRUPT)
        self._new_line()
