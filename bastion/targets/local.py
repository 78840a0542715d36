"""The relay endpoint of a client program the bastion runs locally for a brokered session (psql, the kubectl
prompt): in the session sandbox, on its own pty (interactive) or with pipes (exec form, stdout and stderr apart)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from pathlib import Path

from bastion.sandbox import Sandbox
from bastion.targets.base import TargetExit
from bastion.terminal.ptyproc import PtyProcess, ignore_keyboard_signals
from bastion.terminal.relay import PtyEndpoint, Relay


class LocalClient:
    """Subclasses set up ``home`` and call ``_spawn_pty`` or ``_spawn_pipes``; the rest is the Endpoint protocol."""

    label = "the client"

    def __init__(self, relay: Relay):
        self.relay = relay
        self.proc: asyncio.subprocess.Process | None = None
        self.pty: PtyEndpoint | None = None
        self.home: Path | None = None
        self._pumps: list[asyncio.Future[None]] = []
        self._exited: asyncio.Future[int | None] | None = None
        self._stdin_open = False

    def _spawn_pty(self, argv: list[str], env: dict[str, str], sandbox: Sandbox, cols: int, rows: int) -> None:
        assert self.home is not None
        proc = PtyProcess(sandbox.wrap(argv, home=self.home, env=env), env={} if sandbox.active else env,
                          cols=cols, rows=rows, cwd=str(self.home), wrapper=sandbox.active)
        self._exited = asyncio.get_running_loop().create_future()
        fut = self._exited

        def on_exit(status: int | None) -> None:
            if not fut.done():
                fut.set_result(status)

        self.pty = PtyEndpoint(proc, self.relay, on_exit, owner=self)

    async def _spawn_pipes(self, argv: list[str], env: dict[str, str], sandbox: Sandbox, *,
                           stdin: bool = False) -> None:
        assert self.home is not None
        self.proc = await asyncio.create_subprocess_exec(
            *sandbox.wrap(argv, home=self.home, env=env),
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={} if sandbox.active else env,
            cwd=str(self.home), start_new_session=True,
            preexec_fn=ignore_keyboard_signals if sandbox.active else None)
        self._stdin_open = stdin
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._pumps = [asyncio.ensure_future(self._pump(self.proc.stdout, False)),
                       asyncio.ensure_future(self._pump(self.proc.stderr, True))]

    async def _pump(self, stream: asyncio.StreamReader, stderr: bool) -> None:
        while chunk := await stream.read(65536):
            self.relay.output(self, chunk, stderr=stderr)

    async def wait(self) -> TargetExit:
        if self._exited is not None:
            status = await self._exited
            status = 0 if status is None else status
        else:
            assert self.proc is not None
            await asyncio.gather(*self._pumps, return_exceptions=True)
            status = await self.proc.wait()
        if status < 0:
            return TargetExit(None, signal.Signals(-status).name.removeprefix("SIG"),
                              f"{self.label} killed by {-status}")
        return TargetExit(status, None, f"{self.label} exited with status {status}")

    def close(self) -> None:
        if self.pty is not None:
            self.pty.close()
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)

    # -- Endpoint protocol: the pty's when interactive; in the exec form stdin goes to the pipe, if any --------
    def write(self, data: bytes) -> None:
        if self.pty is not None:
            self.pty.write(data)
        elif self._stdin_open and self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self.proc.stdin.write(data)

    def resize(self, cols: int, rows: int) -> None:
        if self.pty is not None:
            self.pty.resize(cols, rows)

    def signal(self, name: str) -> None:
        if self.pty is not None:
            self.pty.signal(name)
        elif name == "INT" and self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(OSError):  # the group: the client itself, inside the sandbox
                os.killpg(self.proc.pid, signal.SIGINT)

    def send_break(self, msec: int) -> None:
        self.signal("INT")

    def eof(self) -> None:
        if self.pty is not None:
            self.pty.eof()
        elif self._stdin_open and self.proc is not None and self.proc.stdin is not None:
            self._stdin_open = False
            with contextlib.suppress(ConnectionError, RuntimeError):
                self.proc.stdin.close()

    def pending(self) -> int:
        return self.pty.pending() if self.pty is not None else 0

    def echo_known(self) -> bool | None:
        return self.pty.echo_known() if self.pty is not None else True

    def pause_reading(self) -> None:
        if self.pty is not None:
            self.pty.pause_reading()

    def resume_reading(self) -> None:
        if self.pty is not None:
            self.pty.resume_reading()
