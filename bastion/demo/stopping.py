"""How the demo is told to stop: Ctrl-C (SIGINT), SIGTERM, and SIGHUP, which is also what the kernel sends when the
demo's terminal goes away (a closed tmux pane or ssh window). Each one stops the demo the same way, with its
cleanup; none of them is left to its default action, which ends the process without any cleanup. A terminal that
closes without a SIGHUP reaching the demo (it was not in the terminal's foreground process group) is noticed too."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
TERMINAL_GONE = "its terminal closed"
TERMINAL_POLL = 2.0  # seconds between looks at the terminal


class Stopped(BaseException):
    """A stop signal arrived while the demo was starting (a BaseException, like KeyboardInterrupt: no ``except
    Exception`` on the way swallows it)."""


def _raise_stopped(sig: int, frame: FrameType | None) -> None:
    if sig == signal.SIGHUP:
        mute_dead_terminal()
    raise Stopped(signal.Signals(sig).name)


@contextlib.contextmanager
def stops_raise() -> Iterator[None]:
    """While starting: SIGTERM and SIGHUP raise Stopped (as SIGINT raises KeyboardInterrupt), so the cleanup of
    whatever has started so far runs. Afterwards, while the demo cleans up, stop signals are noted and ignored: a
    second Ctrl-C (or the hangup that follows a closed window) must not cut the cleanup short."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with it ignored (`cmd &`): the
    for sig in (signal.SIGTERM, signal.SIGHUP):                # running demo answers it too (wait_for_stop)
        signal.signal(sig, _raise_stopped)
    try:
        yield
    finally:
        hold_stop_signals()


def block_stop_signals() -> None:
    """Hold stop signals back (pending) from now until :func:`hold_stop_signals`: the event loop, when it closes,
    gives SIGTERM and SIGHUP back their default action, which would end the demo in the middle of its cleanup."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def hold_stop_signals() -> None:
    """Stop signals from now on are ignored but for what they say about the terminal (SIGHUP: it may be gone); one
    held back by :func:`block_stop_signals` arrives now. A Python handler, not SIG_IGN, which children inherit."""
    def noted(sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGHUP:
            mute_dead_terminal()

    for sig in STOP_SIGNALS:
        signal.signal(sig, noted)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


async def wait_for_stop() -> str:
    """Return why the demo stops: the name of the first stop signal (SIGINT, SIGTERM or SIGHUP), or that its
    terminal went away without a SIGHUP reaching it (it ran in a background process group, as under ``timeout``)."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[str] = loop.create_future()

    def stop(why: str) -> None:
        if why in ("SIGHUP", TERMINAL_GONE):
            mute_dead_terminal()
        if not got.done():
            got.set_result(why)

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop, sig.name)
    watch = asyncio.create_task(_watch_terminal(stop)) if os.isatty(1) else None
    try:
        return await got
    finally:
        if watch is not None:
            watch.cancel()


async def _watch_terminal(stop: Callable[[str], None]) -> None:
    """Every TERMINAL_POLL seconds, an empty write to the terminal: on a hung-up one it fails (EIO)."""
    while True:
        await asyncio.sleep(TERMINAL_POLL)
        try:
            os.write(1, b"")
        except OSError:
            stop(TERMINAL_GONE)
            return


def mute_dead_terminal() -> None:
    """When the terminal is gone (a write to it fails: EIO on a hung-up tty, EPIPE on a closed pipe), point stdout
    and stderr at /dev/null, so that what the cleanup prints or logs cannot fail in the middle of it."""
    for fd in (1, 2):
        try:
            os.write(fd, b"")
        except OSError:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, fd)
            os.close(null)
