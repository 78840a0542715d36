"""An embedded SSH server with a sandboxed shell: the ``demo-shell`` target of ``bastion demo``.

It is a plain SSH target for the demo (the bastion reaches it like any other host, with a pinned host key and a
key only the daemon holds). Every session (an interactive shell on a pty, or a command via ``/bin/sh -c``, with or
without a pty) runs in a bubblewrap sandbox (``bastion.sandbox``) as an unprivileged user when the demo runs as root:
it sees a read-only ``/usr``, a few harmless files of ``/etc``, its own ``/proc`` and ``/dev``, no network, and
two directories of its own that outlive the session: a home at ``/home/demo`` and ``/tmp``. It sees nothing of the
demo's state directory (config, keys, secrets, database, recordings) nor of the project: an operator on demo-shell
holds no credential, which is what the demo is there to show. Without a working sandbox there is no demo-shell.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import asyncssh

from bastion.sandbox import Sandbox, SandboxError, make_sandbox
from bastion.terminal.ptyproc import PtyProcess, set_winsize

log = logging.getLogger(__name__)

SHELL_USERS = ("bastion-demo", "nobody")  # a root demo's shell runs as the first of these that exists
HOME = Path("/home/demo")  # the shell's home, inside the sandbox
PS1 = r"demo-shell:\w\$ "
GUARD_AT = Path("/opt/bastion/bastion-guard")  # where demo-shell's sessions find bastion-guard (guard_path)
SFTP_SERVERS = ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/libexec/sftp-server")


def install_guard(root: Path) -> Path:
    """bastion-guard for demo-shell (``enforce: guard``), as the Ansible role installs it on a target: the one file
    of :mod:`guard.agent`, executable, not writable by the session's user. Shown in the sandbox at ``GUARD_AT``."""
    spec = importlib.util.find_spec("guard.agent")
    if spec is None or spec.origin is None:
        raise SandboxError("bastion-guard (guard/agent.py) is not installed with the bastion")
    dest = root / "bastion-guard"
    tmp = dest.with_suffix(".new")
    shutil.copyfile(spec.origin, tmp)
    tmp.chmod(0o755)
    tmp.replace(dest)
    return dest


class DemoShell:
    """Where demo-shell sessions run: ``sandbox``, with ``root/home`` as their home and ``root/tmp`` as /tmp."""

    def __init__(self, sandbox: Sandbox, root: Path):
        if not sandbox.active:
            raise SandboxError("demo-shell only runs in its sandbox")
        self.sandbox, self.root = sandbox, root
        self.home, self.tmp = root / "home", root / "tmp"
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for d in (self.home, self.tmp):  # the sandbox user's own (the directory around them is not)
            d.mkdir(exist_ok=True, mode=0o700)
            sandbox.prepare(d)
        self.guard = install_guard(root)
        try:
            self.user = pwd.getpwuid(sandbox.uid if sandbox.uid is not None else os.getuid()).pw_name
        except KeyError:
            self.user = "demo"

    def env(self, term: str | None) -> dict[str, str]:
        return {"TERM": term or "dumb", "HOME": str(HOME), "PATH": "/usr/local/bin:/usr/bin:/bin",
                "LANG": "C.UTF-8", "USER": self.user, "LOGNAME": self.user, "SHELL": "/bin/bash", "PS1": PS1}

    def wrap(self, argv: list[str], term: str | None) -> list[str]:
        return self.sandbox.wrap(argv, home=self.home, home_at=HOME, tmp=self.tmp, env=self.env(term),
                                 files={GUARD_AT: self.guard})

    def check(self) -> None:
        """Run one command in the sandbox: SandboxError (with bwrap's complaint) when it cannot start here."""
        try:
            out = subprocess.run(self.wrap(["/bin/sh", "-c", "id -u"], None), capture_output=True, text=True,
                                 timeout=30, env={}, cwd="/")
        except (OSError, subprocess.TimeoutExpired) as e:
            raise SandboxError(f"the sandbox does not start: {e}") from None
        if out.returncode != 0:
            why = (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[-1]
            raise SandboxError(f"the sandbox does not start: {why}")
        if os.geteuid() == 0 and out.stdout.strip() in ("", "0"):
            raise SandboxError("the sandboxed shell would run as root")


def demo_shell(root: Path) -> DemoShell:
    """The sandbox of demo-shell sessions, checked; SandboxError (the reason) when there can be none."""
    if shutil.which("bwrap") is None:
        raise SandboxError("bubblewrap (bwrap) is not installed, and the shell runs only in its sandbox "
                           "(apt-get install bubblewrap)")
    user = "nobody"
    for name in SHELL_USERS:
        try:
            if pwd.getpwnam(name).pw_uid != 0:
                user = name
                break
        except KeyError:
            continue
    shell = DemoShell(make_sandbox("required", user), root)
    shell.check()
    return shell


class _TargetSession(asyncssh.SSHServerSession):
    def __init__(self, shell: DemoShell) -> None:
        self.shell = shell
        self.chan: asyncssh.SSHServerChannel | None = None
        self.term: str | None = None
        self.size = (80, 24)
        self.command: str | None = None
        self.pty: PtyProcess | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self._early: list[bytes] = []  # what the client sent before the process started (an sftp client's INIT)
        self._early_eof = False

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

    def subsystem_requested(self, subsystem: str) -> bool:
        """sftp: OpenSSH's sftp-server, in the same sandbox as the shell (it sees the same files)."""
        server = next((p for p in SFTP_SERVERS if os.access(p, os.X_OK)), None)
        if subsystem != "sftp" or server is None:
            return False
        self.command = server
        return True

    def session_started(self) -> None:
        asyncio.get_running_loop().create_task(self._run())

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
        # bwrap leads the pty's session; the shell inside resets no ignored signal, so none is ignored here
        self.pty = PtyProcess(self.shell.wrap(argv, self.term), env={}, cols=self.size[0], rows=self.size[1],
                              cwd="/")
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
            *self.shell.wrap(["/bin/sh", "-c", self.command], None), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={}, cwd="/", start_new_session=True)

        assert self.proc.stdin is not None
        for data in self._early:
            self.proc.stdin.write(data)
        self._early.clear()
        if self._early_eof:
            self.proc.stdin.close()

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
        elif self.pty is None and self.proc is None:
            self._early.append(data)

    def eof_received(self) -> bool:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
        else:
            self._early_eof = True
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
    def __init__(self, client_key: asyncssh.SSHKey, shell: DemoShell):
        self.client_key, self.shell = client_key, shell

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return key.public_data == self.client_key.public_data

    def session_requested(self) -> _TargetSession:
        return _TargetSession(self.shell)


async def start_demo_target(host: str, port: int, host_key: asyncssh.SSHKey, client_key: asyncssh.SSHKey,
                            shell: DemoShell) -> asyncssh.SSHAcceptor:
    """Listen on ``host:port``; only ``client_key`` (the bastion's credential) may log in; sessions run in
    ``shell`` (see :func:`demo_shell`)."""
    return await asyncssh.create_server(
        lambda: _TargetServer(client_key, shell), host, port, server_host_keys=[host_key], encoding=None,
        line_editor=False, agent_forwarding=False, x11_forwarding=False, allow_scp=False, config=[],
        reuse_address=True)
