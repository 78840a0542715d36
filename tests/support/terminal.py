"""A program on a real pty (pexpect) with a pyte screen, for driving TUIs and shells like a person would."""

from __future__ import annotations

import os
import re
import select
import signal
import threading
import time
from collections.abc import Callable
from types import TracebackType

import pexpect
import pyte

KEYS: dict[str, str] = {
    "enter": "\r", "up": "\x1b[A", "down": "\x1b[B", "right": "\x1b[C", "left": "\x1b[D",
    "ctrl-c": "\x03", "ctrl-d": "\x04", "esc": "\x1b", "backspace": "\x7f", "tab": "\t",
    "f2": "\x1bOQ", "f3": "\x1bOR", "f4": "\x1bOS", "f5": "\x1b[15~",
}


def _default_signals() -> None:
    """A program in a terminal gets the signals a login shell would give it: a test run started in the background
    (bash ignores SIGINT and SIGQUIT for ``cmd &``, nohup SIGHUP) must not hand its ignored signals on, or Ctrl-C in
    the pane would do nothing."""
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)


class Terminal:
    """Spawn ``argv`` on a pty of ``cols`` x ``rows``; a background thread feeds its output to a pyte screen.

    ``raw`` holds every byte the program wrote. String patterns are compiled with ``re.M``. The screen answers
    device status / attributes queries (cursor position etc.) like a real terminal does.
    If ``env`` is None the test's environment is inherited; TERM defaults to ``xterm-256color`` when not set.
    """

    def __init__(self, argv: list[str], *, cols: int = 100, rows: int = 30, env: dict[str, str] | None = None,
                 cwd: str | os.PathLike[str] | None = None):
        env = dict(os.environ if env is None else env)
        if env.get("TERM", "dumb") == "dumb":
            env["TERM"] = "xterm-256color"
        self._lock = threading.RLock()
        self.screen = pyte.Screen(cols, rows)
        self.screen.write_process_input = self._answer  # type: ignore[method-assign]
        self.stream = pyte.ByteStream(self.screen)
        self.raw = bytearray()
        self.status: int | None = None
        self.child = pexpect.spawn(argv[0], argv[1:], dimensions=(rows, cols), env=env,
                                   cwd=None if cwd is None else str(cwd), preexec_fn=_default_signals)
        self._fd = self.child.child_fd
        self._stop = threading.Event()
        self._eof = threading.Event()
        self._reader = threading.Thread(target=self._read_loop, name=f"terminal-{self.child.pid}", daemon=True)
        self._reader.start()

    # -- output -------------------------------------------------------------------------------------------------
    def _read_loop(self) -> None:
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([self._fd], [], [], 0.05)
                if not ready:
                    continue
                try:
                    data = os.read(self._fd, 65536)
                except OSError:  # EIO: the pty's last writer is gone
                    break
                if not data:
                    break
                with self._lock:
                    self.raw += data
                    self.stream.feed(data)
        except (OSError, ValueError):  # fd closed under us by close()
            pass
        finally:
            self._eof.set()

    def _answer(self, data: str) -> None:
        """Reply to terminal queries (DSR, DA) on the program's input, as a terminal would."""
        try:
            os.write(self._fd, data.encode())
        except OSError:
            pass

    @property
    def eof(self) -> bool:
        """True once the program's side of the pty is closed and all output has been read."""
        return self._eof.is_set()

    def screen_text(self) -> str:
        """The display: each line right-stripped, joined with newlines."""
        with self._lock:
            return "\n".join(line.rstrip() for line in self.screen.display)

    def raw_text(self) -> str:
        """All output so far, decoded as UTF-8 with errors replaced."""
        with self._lock:
            return bytes(self.raw).decode("utf-8", "replace")

    def cursor(self) -> tuple[int, int]:
        """(x, y) of the cursor, 0-based."""
        with self._lock:
            return self.screen.cursor.x, self.screen.cursor.y

    # -- input --------------------------------------------------------------------------------------------------
    def send(self, data: str | bytes) -> None:
        """Type ``data`` (str is UTF-8 encoded)."""
        self.child.send(data)

    def send_key(self, name: str) -> None:
        """Press a named key: enter, up, down, left, right, ctrl-c, ctrl-d, esc, backspace, tab."""
        self.child.send(KEYS[name])

    # -- waiting ------------------------------------------------------------------------------------------------
    def _wait(self, pattern: str | re.Pattern[str], text: Callable[[], str], timeout: float, what: str) -> str:
        rx = re.compile(pattern, re.M) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            eof = self.eof  # read before the text so that nothing arrives unseen after it
            current = text()
            m = rx.search(current)
            if m:
                return m.group(0)
            if eof:
                raise AssertionError(f"{rx.pattern!r} not in the {what}; the program exited:\n{current}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{rx.pattern!r} not in the {what} after {timeout}s:\n{current}")
            time.sleep(0.02)

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 15) -> str:
        """Wait until ``pattern`` re.search-matches the screen text; return the match. AssertionError + dump if not."""
        return self._wait(pattern, self.screen_text, timeout, "screen")

    def wait_for_raw(self, pattern: str | re.Pattern[str], timeout: float = 15) -> str:
        """Like wait_for, on all raw output so far (decoded with errors='replace')."""
        return self._wait(pattern, self.raw_text, timeout, "output")

    def wait_count(self, pattern: str, n: int, timeout: float = 15) -> None:
        """Wait until ``pattern`` has matched ``n`` times in all raw output (for a message that repeats)."""
        rx = re.compile(pattern, re.M)
        self._wait(rf"(?s)(?:{pattern}.*){{{n}}}" if n > 1 else pattern, self.raw_text, timeout,
                   f"output ({n} times; seen {len(rx.findall(self.raw_text()))})")

    def resize(self, cols: int, rows: int) -> None:
        """Resize the pyte screen and the pty (the program gets SIGWINCH)."""
        with self._lock:
            self.screen.resize(rows, cols)  # pyte: resize(lines, columns)
        self.child.setwinsize(rows, cols)

    def wait_exit(self, timeout: float = 15) -> int:
        """Wait for the program to exit and its output to drain; its exit status, or -signal if killed."""
        deadline = time.monotonic() + timeout
        while self.child.isalive():
            if time.monotonic() > deadline:
                raise AssertionError(f"program still running after {timeout}s:\n{self.screen_text()}")
            time.sleep(0.02)
        self._eof.wait(max(0.5, deadline - time.monotonic()))  # a leftover grandchild may hold the pty open
        es, sig = self.child.exitstatus, self.child.signalstatus
        self.status = es if es is not None else -(sig or 0)
        return self.status

    def close(self) -> None:
        """Kill the program if it still runs; stop reading; close the pty."""
        if self.child.isalive():
            self.child.terminate(force=True)
        self._stop.set()
        self._reader.join(2)
        if self.status is None and not self.child.isalive():
            es, sig = self.child.exitstatus, self.child.signalstatus
            self.status = es if es is not None else -(sig or 0)
        self.child.close(force=True)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
