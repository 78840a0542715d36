"""Command lines for the stock OpenSSH client that ignore the user's config, agent and known_hosts."""

from __future__ import annotations

from pathlib import Path


def ssh_argv(key: Path, port: int, user: str, *extra: str, tty: bool | None = None) -> list[str]:
    """``ssh`` with only ``key``, no agent, no config, any host key; ``tty`` True=-t, False=-T (and BatchMode)."""
    argv = ["ssh", "-F", "/dev/null", "-i", str(key), "-p", str(port), "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR"]
    if tty is True:
        argv.append("-t")
    elif tty is False:
        argv += ["-T", "-o", "BatchMode=yes"]
    return [*argv, f"{user}@127.0.0.1", *extra]
