"""A program on a real pty (pexpect) with a pyte screen, for driving TUIs and shells like a person would."""

from __future__ import annotations

import re
import time
from typing import Any

import pexpect
import pyte

KEYS = {"enter": "\r", "up": "\x1b[A", "down": "\x1b[B", "right": "\x1b[C", "left": "\x1b[D",
        "ctrl-c": "\x03", "ctrl-d": "\x04", "esc": "\x1b", "backspace": "\x7f", "tab": "\t"}


class Terminal:
    """Spawn ``argv`` on a pty of ``cols``x``rows``; read its output into a screen."""

    def __init__(self, argv: list[str], *, cols: int = 100, rows: int = 30, env: dict[str, str] | None = None,
                 cwd: str | None = None):
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = bytearray()
        self.child = pexpect.spawn(argv[0], argv[1:], dimensions=(rows, cols), env=env, cwd=cwd, echo=False)
        self.status: int | None = None

    def _pump(self, timeout: float = 0.05) -> None:
        try:
            data = self.child.read_nonblocking(65536, timeout=timeout)
        except pexpect.TIMEOUT:
            return
        except pexpect.EOF:
            return
        self.raw += data
        self.stream.feed(data)

    def send(self, data: str | bytes) -> None:
        self.child.send(data)

    def send_key(self, name: str) -> None:
        self.child.send(KEYS[name])

    def screen_text(self) -> str:
        self._pump(0)
        return "\n".join(line.rstrip() for line in self.screen.display)

    def _wait(self, pattern: str | re.Pattern[str], text: Any, timeout: float, what: str) -> str:
        rx = re.compile(pattern, re.M) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            current = text()
            m = rx.search(current)
            if m:
                return m.group(0)
            if time.monotonic() > deadline:
                raise AssertionError(f"{rx.pattern!r} not on the {what} after {timeout}s:\n{current}")
            if not self.child.isalive() and not self.child.buffer:
                self._pump(0.05)
                if not rx.search(text()):
                    raise AssertionError(f"{rx.pattern!r} not on the {what}; the program exited:\n{text()}")
            self._pump(0.05)

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 15) -> str:
        """Wait until ``pattern`` (re.search, multiline) matches the screen; return the match."""
        return self._wait(pattern, self.screen_text, timeout, "screen")

    def wait_for_raw(self, pattern: str | re.Pattern[str], timeout: float = 15) -> str:
        """Like wait_for, on all output so far (decoded with errors='replace')."""
        return self._wait(pattern, lambda: bytes(self.raw).decode("utf-8", "replace"), timeout, "output")

    def resize(self, cols: int, rows: int) -> None:
        self.child.setwinsize(rows, cols)
        self.screen.resize(rows, cols)

    def wait_exit(self, timeout: float = 15) -> int:
        """The child's exit status (a signal as its negative number)."""
        deadline = time.monotonic() + timeout
        while self.child.isalive():
            if time.monotonic() > deadline:
                raise AssertionError(f"program still running after {timeout}s:\n{self.screen_text()}")
            self._pump(0.05)
        self._pump(0)
        self.child.close()
        self.status = self.child.exitstatus if self.child.exitstatus is not None else -(self.child.signalstatus or 0)
        return self.status

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
