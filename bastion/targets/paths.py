"""Paths as an ssh target sees them: the exec form's transfer programs (``scp -t uploads/``, ``rsync --server . d``,
``git-upload-pack repo.git``) name paths relative to the target account's home and through whatever symlinks the
target has. The policy judges absolute paths, so before such a command runs the bastion asks the target itself
(SFTP REALPATH over its own connection, with the vaulted key) where each path really is: ``~/x`` where ``x`` is a
symlink to ``/etc`` is judged as ``/etc``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import asyncssh

from bastion.config import Config, SshResource
from bastion.proxies.sftp.files import resolve
from bastion.targets.base import TargetError
from bastion.targets.ssh import connect

RESOLVE_TIMEOUT = 20.0  # seconds for the sftp lookups, beyond the connection's own timeout


async def resolve_on_target(config: Config, res: SshResource, paths: Iterable[str]) -> dict[str, str]:
    """Each path (``~/...`` relative to the home, or absolute) as the target resolves it. :class:`TargetError`
    when the target cannot be asked (no sftp subsystem, unreachable) or a path cannot be resolved: the caller
    refuses what it cannot judge."""
    try:
        return await asyncio.wait_for(_resolve_all(config, res, list(paths)),
                                      config.limits.target_connect_timeout + RESOLVE_TIMEOUT)
    except TimeoutError:
        raise TargetError("the target did not resolve the paths in time") from None


async def _resolve_all(config: Config, res: SshResource, paths: list[str]) -> dict[str, str]:
    conn = await connect(config, res)
    try:
        try:
            sftp = await conn.start_sftp_client()
        except (OSError, asyncssh.Error) as e:
            raise TargetError(f"the target cannot resolve paths (no sftp subsystem?): {e}") from None

        async def realpath(p: str) -> str | None:
            try:
                return str(await sftp.realpath(p))
            except (OSError, asyncssh.Error):
                return None

        out = {}
        for p in paths:
            ask = "." if p == "~" else (p[2:] if p.startswith("~/") else p)
            real = await resolve(realpath, ask)
            if real is None:
                raise TargetError(f"the path {p!r} cannot be resolved on the target")
            out[p] = real
        sftp.exit()
        return out
    finally:
        conn.close()
