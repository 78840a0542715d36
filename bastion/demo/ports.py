"""The demo's ports, checked before anything starts: a port another program holds is named in one clear line (with
that program, when this user may see it), instead of a part that silently does not start or a traceback later."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

TCP_LISTEN = "0A"  # the LISTEN state in /proc/net/tcp


def demo_ports(port: int) -> dict[int, str]:
    """What the demo listens on, by port."""
    return {port: "the bastion", port + 1: "demo-shell", port + 2: "demo-db", port + 3: "demo-k8s"}


def first_busy(ports: dict[int, str], host: str = "127.0.0.1") -> str | None:
    """One line on the first of ``ports`` that cannot be listened on, or None when all are free."""
    for port, what in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # as the servers do: a port whose last connections linger in TIME_WAIT is free
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as e:
                why = "is in use" if e.errno == 98 else f"cannot be used ({e.strerror})"
                return (f"bastion demo: port {port} (for {what}) {why}{holder(port)}; stop that or choose another "
                        f"--port (the demo uses {min(ports)}-{max(ports)})")
    return None


def holder(port: int) -> str:
    """" by pid N (name)" for the process listening on ``port``, or "" when it cannot be told."""
    inodes = _listening_inodes(port)
    if not inodes:
        return ""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        name = (proc / "comm").read_text().strip()
                        return f" by pid {proc.name} ({name})"
    return ""


def _listening_inodes(port: int) -> set[str]:
    """``socket:[INODE]`` of the sockets that listen on ``port`` (any address, IPv4 or IPv6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if len(f) > 9 and f[3] == TCP_LISTEN and int(f[1].rsplit(":", 1)[1], 16) == port:
                    found.add(f"socket:[{f[9]}]")
    return found
