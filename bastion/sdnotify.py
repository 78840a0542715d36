"""systemd's readiness protocol (``Type=notify``): one datagram per state change to ``$NOTIFY_SOCKET``. The
variable is taken out of the environment at import, so no child process (indexers, session processes) inherits
the right to speak for the daemon."""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)
_ADDRESS = os.environ.pop("NOTIFY_SOCKET", "")


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
