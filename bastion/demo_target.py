"""An embedded SSH server with a real shell: the ``demo-shell`` target of ``bastion demo``.

It is a plain SSH target for the demo (the bastion reaches it like any other host, with a pinned host key and a
key only the daemon holds). It runs the local user's shell on a pty, or a command via ``/bin/sh -c``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

import asyncssh

from bastion.ptyproc import PtyProcess, set_winsize

log = logging.getLogger(__name__)


class _TargetSession(asyncssh.SSHServerSession):
    def __init__(self) -> None:
        self.chan: asyncssh.SSHServerChannel | None = None
        self.term: str | None = None
        self.size = (80, 24)
        self.command: str | None = None
        self.pty: PtyProcess | None = None
        self.proc: asyncio.subprocess.Process | None = None

    def connection_made(self, chan: asyncssh.SSHServerChannel) -> None:
        self.chan = chan

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Any) -> bool:
        self.term, self.size = term_type, (term_size[0] or 80, term_size[1] or 24)
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self.command = command
        return True

    def session_started(self) -> None:
        asyncio.get_running_loop().create_task(self._run())

    def _env(self) -> dict[str, str]:
        home = os.path.expanduser("~")
        return {"TERM": self.term or "dumb", "HOME": home, "PATH": "/usr/local/bin:/usr/bin:/bin",
                "LANG": "C.UTF-8", "USER": os.environ.get("USER", "demo"), "SHELL": "/bin/bash",
                "PS1": r"demo-shell:\w\$ "}

    async def _run(self) -> None:
        assert self.chan is not None
        try:
            status = await (self._run_pty() if self.term else self._run_pipes())
        except Exception:
            log.exception("demo target session failed")
            status = 255
        self.chan.exit(status if status >= 0 else 128 - status)

    async def _run_pty(self) -> int:
        argv = ["/bin/sh", "-c", self.command] if self.command else ["/bin/bash", "--norc", "-i"]
        self.pty = PtyProcess(argv, env=self._env(), cols=self.size[0], rows=self.size[1],
                              cwd=os.path.expanduser("~"))
        loop, done = asyncio.get_running_loop(), asyncio.Event()
        master = self.pty.master

        def readable() -> None:
            try:
                data = os.read(master, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(master)
                done.set()
                return
            assert self.chan is not None
            self.chan.write(data)

        loop.add_reader(master, readable)
        await done.wait()
        status = await asyncio.to_thread(self.pty.proc.wait)
        self.pty.close()
        return status

    async def _run_pipes(self) -> int:
        assert self.command is not None and self.chan is not None
        self.proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=self._env(), cwd=os.path.expanduser("~"), start_new_session=True)

        async def pump(stream: asyncio.StreamReader, datatype: int | None) -> None:
            while chunk := await stream.read(65536):
                assert self.chan is not None
                self.chan.write(chunk, datatype)

        assert self.proc.stdout is not None and self.proc.stderr is not None
        await asyncio.gather(pump(self.proc.stdout, None), pump(self.proc.stderr, asyncssh.EXTENDED_DATA_STDERR))
        return await self.proc.wait()

    def data_received(self, data: bytes, datatype: int | None) -> None:
        if self.pty is not None:
            try:
                os.write(self.pty.master, data)
            except OSError:
                pass
        elif self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.write(data)

    def eof_received(self) -> bool:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
        return True

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        if self.pty is not None:
            set_winsize(self.pty.master, width, height)

    def signal_received(self, sig: str) -> None:
        num = getattr(signal, f"SIG{sig}", None)
        pid = self.pty.pid if self.pty else (self.proc.pid if self.proc else None)
        if num is not None and pid is not None:
            try:
                os.killpg(pid, num)
            except OSError:
                pass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pty is not None:
            self.pty.terminate()
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass


class _TargetServer(asyncssh.SSHServer):
    def __init__(self, client_key: asyncssh.SSHKey):
        self.client_key = client_key

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return key.public_data == self.client_key.public_data

    def session_requested(self) -> _TargetSession:
        return _TargetSession()


async def start_demo_target(host: str, port: int, host_key: asyncssh.SSHKey,
                            client_key: asyncssh.SSHKey) -> asyncssh.SSHAcceptor:
    """Listen on ``host:port``; only ``client_key`` (the bastion's credential) may log in."""
    return await asyncssh.create_server(
        lambda: _TargetServer(client_key), host, port, server_host_keys=[host_key], encoding=None,
        line_editor=False, agent_forwarding=False, x11_forwarding=False, allow_scp=False, config=[],
        reuse_address=True)
