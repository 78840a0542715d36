"""Replaying a recording on the auditor's own terminal (F5, p): the player on a fresh pty, in the session sandbox,
as the active endpoint of the channel's relay (not recorded)."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path

from bastion.services import Services
from bastion.sessions.client import ClientSide
from bastion.terminal.ptyproc import PtyProcess
from bastion.terminal.relay import PtyEndpoint

MAX_NEW_BOOKMARKS = 200


async def play(services: Services, client: ClientSide, path: str,
               bookmarks: list[tuple[float, str]] | None = None) -> tuple[int | None, list[tuple[float, str]]]:
    """Play the recording at ``path`` until the auditor quits (with ``bookmarks`` among its markers); the player's
    exit status, and the bookmarks the auditor made with ``b`` (the caller keeps them, as the auditor's)."""
    home = Path(tempfile.mkdtemp(prefix="bastion-replay-"))
    try:
        status = await _run_player(services, client, path, home, bookmarks or [])
        return status, await asyncio.to_thread(new_bookmarks, home / NEW_BOOKMARKS)
    finally:
        shutil.rmtree(home, ignore_errors=True)


NEW_BOOKMARKS = "new-bookmarks.jsonl"


def new_bookmarks(path: Path) -> list[tuple[float, str]]:
    """What the player wrote (it reads recordings an attacker shaped, so its file is read as untrusted: bounded,
    each line checked, anything else dropped)."""
    out: list[tuple[float, str]] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read(256 * 1024).splitlines()
    except OSError:
        return out
    for line in lines[:MAX_NEW_BOOKMARKS]:
        try:
            raw = json.loads(line)
        except ValueError:
            continue
        t, note = (raw.get("t"), raw.get("note")) if isinstance(raw, dict) else (None, None)
        if isinstance(t, int | float) and t >= 0 and isinstance(note, str) and note.strip():
            out.append((float(t), note.strip()[:2000]))
    return out


async def _run_player(services: Services, client: ClientSide, path: str, home: Path,
                      bookmarks: list[tuple[float, str]]) -> int | None:
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
    extra: list[str] = []
    if bookmarks:  # beside the copy the player reads: the recording itself never changes
        marks = home / "bookmarks.json"
        marks.write_text(json.dumps([[t, label] for t, label in bookmarks]), encoding="utf-8")
        sandbox.prepare(marks)
        extra = ["--bookmarks", str(marks)]
    extra += ["--bookmark-out", str(home / NEW_BOOKMARKS)]  # in the player's own (writable, throwaway) home
    sandbox.prepare(home)
    argv = sandbox.wrap([sys.executable, "-I", "-m", "recorder.player", path, *extra], home=home, env=env,
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
