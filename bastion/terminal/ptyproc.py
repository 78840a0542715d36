"""Spawn a process as session leader on a fresh pty, and talk to its master side."""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import subprocess
import termios
from collections.abc import Sequence


def set_winsize(fd: int, cols: int, rows: int) -> None:
    """Set a pty's window size (the kernel sends SIGWINCH to its foreground process group)."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _child_setup() -> None:  # runs in the child between fork and exec
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)


def ignore_keyboard_signals() -> None:
    """For a wrapper (the sandbox) in the terminal's process group: ^C and ^\\ are for the program it runs, which
    installs its own handlers (psql does), not for the wrapper, whose death would end the session."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)


def _wrapper_setup() -> None:
    _child_setup()
    ignore_keyboard_signals()


class PtyProcess:
    """A child on a new pty: ``master`` is the non-blocking master fd, ``proc`` the Popen handle."""

    def __init__(self, argv: Sequence[str], *, env: dict[str, str], cols: int, rows: int,
                 pass_fds: Sequence[int] = (), cwd: str | None = None, wrapper: bool = False):
        master, slave = os.openpty()
        try:
            set_winsize(master, cols, rows)
            self.proc = subprocess.Popen(  # noqa: S603 - argv is built by the daemon, never by the client
                list(argv), stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                pass_fds=tuple(pass_fds), close_fds=True, preexec_fn=_wrapper_setup if wrapper else _child_setup,
                restore_signals=True)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self.master = master
        self.pid = self.proc.pid

    def echo_enabled(self) -> bool | None:
        """Whether the pty echoes input (False while a password is being typed); None if unknown."""
        try:
            return bool(termios.tcgetattr(self.master)[3] & termios.ECHO)
        except (termios.error, OSError):
            return None

    def terminate(self) -> None:
        """SIGHUP then SIGKILL the whole session (process group) of the child."""
        for sig in (signal.SIGHUP, signal.SIGKILL):
            try:
                os.killpg(self.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            if self.proc.poll() is not None:
                break

    def close(self) -> None:
        try:
            os.close(self.master)
        except OSError:
            pass
