"""How the demo is told to stop: Ctrl-C (SIGINT), SIGTERM, and SIGHUP, which is also what the kernel sends when the
demo's terminal goes away (a closed tmux pane or ssh window). Each one stops the demo the same way, with its
cleanup; none of them is left to its default action, which ends the process without any cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


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
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_stopped)
    try:
        yield
    finally:
        hold_stop_signals()


def hold_stop_signals() -> None:
    """Stop signals from now on are ignored but for what they say about the terminal (SIGHUP: it may be gone). A
    Python handler, not SIG_IGN, which children would inherit."""
    def noted(sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGHUP:
            mute_dead_terminal()

    for sig in STOP_SIGNALS:
        signal.signal(sig, noted)


async def wait_for_stop() -> str:
    """Return the name of the first stop signal (SIGINT, SIGTERM or SIGHUP) while the event loop runs."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[str] = loop.create_future()

    def stop(sig: signal.Signals) -> None:
        if sig == signal.SIGHUP:
            mute_dead_terminal()
        if not got.done():
            got.set_result(sig.name)

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop, sig)
    return await got


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
