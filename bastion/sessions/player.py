"""Replaying a recording on the auditor's own terminal (F5, p): the player on a fresh pty, in the session sandbox,
as the active endpoint of the channel's relay (not recorded)."""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

from bastion.services import Services
from bastion.sessions.client import ClientSide
from bastion.terminal.ptyproc import PtyProcess
from bastion.terminal.relay import PtyEndpoint


async def play(services: Services, client: ClientSide, path: str) -> int | None:
    """Play the recording at ``path`` until the auditor quits; the player's exit status."""
    home = Path(tempfile.mkdtemp(prefix="bastion-replay-"))
    try:
        return await _run_player(services, client, path, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def _run_player(services: Services, client: ClientSide, path: str, home: Path) -> int | None:
    """The player reads a recording (output of targets, so input an attacker shaped) and the auditor's keys:
    it runs in the session sandbox, seeing the recording and its keyframes read-only and nothing else."""
    sandbox = services.sandbox
    env = {"TERM": client.term_type or "xterm-256color", "LANG": "C.UTF-8", "PATH": "/usr/bin:/bin",
           "HOME": str(home)}
    files = [p for p in (Path(path), Path(f"{path}.idx")) if p.is_file()]  # the cast and its keyframes
    if sandbox.uid is not None:  # a root daemon's recordings (0640) are not the sandbox user's to read: a copy
        for f in files:
            await asyncio.to_thread(shutil.copyfile, f, home / f.name)
            sandbox.prepare(home / f.name)
        path, files = str(home / Path(path).name), []
    sandbox.prepare(home)
    argv = sandbox.wrap([sys.executable, "-I", "-m", "recorder.player", path], home=home, env=env,
                        ro_paths=[*services.player_paths, *files])
    proc = PtyProcess(argv, env={} if sandbox.active else env, cols=client.cols, rows=client.rows, cwd=str(home),
                      wrapper=sandbox.active)
    exited: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    def on_exit(status: int | None) -> None:
        if not exited.done():
            exited.set_result(status)

    ep = PtyEndpoint(proc, client.relay, on_exit)
    client.endpoints.add(ep)  # closed with the others on hang-up
    client.relay.attach(ep, None)
    client.relay.release()
    try:
        return await exited
    finally:
        client.relay.detach()
        client.endpoints.discard(ep)
        ep.close()
