"""systemd's readiness protocol (``Type=notify``): one datagram per state change to ``$NOTIFY_SOCKET``. The
variable is taken out of the environment at import, so no child process (indexers, session processes) inherits
the right to speak for the daemon; so are the watchdog's (``WatchdogSec=`` in the unit: the daemon then says
``WATCHDOG=1`` twice per period while its main loop turns, and systemd restarts it when it stops saying so)."""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)
_ADDRESS = os.environ.pop("NOTIFY_SOCKET", "")
_WATCHDOG_USEC = os.environ.pop("WATCHDOG_USEC", "")
_WATCHDOG_PID = os.environ.pop("WATCHDOG_PID", "")


def notify(*states: str) -> bool:
    """Send ``READY=1``, ``RELOADING=1``, ``STOPPING=1``, ``STATUS=...``; False when not run by systemd."""
    if not _ADDRESS or not states:
        return False
    addr = "\0" + _ADDRESS[1:] if _ADDRESS.startswith("@") else _ADDRESS
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto("\n".join(states).encode(), addr)
        return True
    except OSError as e:
        log.warning("cannot notify systemd at %s: %s", _ADDRESS, e)
        return False


def monotonic_usec() -> str:
    """``MONOTONIC_USEC=...``, which systemd wants with ``RELOADING=1``."""
    return f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"


def watchdog_interval() -> float | None:
    """Seconds between two ``WATCHDOG=1`` (half the unit's ``WatchdogSec``); None when systemd does not watch this
    process. A liveness signal only: a store that is down makes ``/readyz`` fail, never a restart."""
    try:
        usec, pid = int(_WATCHDOG_USEC), int(_WATCHDOG_PID or os.getpid())
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 and pid == os.getpid() and _ADDRESS else None
