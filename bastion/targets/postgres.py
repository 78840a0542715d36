"""PostgreSQL targets: psql talks to a per-session wire proxy; the daemon holds the password and judges the SQL.

psql runs in the session sandbox (``bastion.sandbox``: no network but the proxy's unix socket, no secrets, a
throwaway home), with an empty environment, no pager, editor or history. Exec form (``ssh bastion DB -- "SQL"``):
``psql -c`` sends the SQL to the server verbatim; a command that starts with a backslash is refused before psql
starts. Interactive psql: with ``restrict: true`` a bastion-owned psqlrc puts psql in ``\\restrict`` mode with a key
the operator never sees, so no meta-command runs at all; without it the session's line filter refuses the
meta-commands that leave SQL (``policies.psql``) and the sandbox makes any that slip past harmless, so an unrestricted
interactive psql is only offered when the sandbox is active.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bastion.config import PgResource
from bastion.pgwire.masking import MaskRule
from bastion.pgwire.proxy import PgProxy
from bastion.pgwire.upstream import Target
from bastion.ptyproc import PtyProcess, ignore_keyboard_signals
from bastion.relay import PtyEndpoint, Relay
from bastion.sandbox import Sandbox, find_psql
from bastion.targets.ssh import TargetError, TargetExit
from policies.engine import Decision


class PsqlExec:
    """A relay endpoint: psql through this session's wire proxy; ``-c SQL`` with stdout and stderr kept apart, or
    (``command`` None) an interactive psql on its own pty."""

    def __init__(self, relay: Relay):
        self.relay = relay
        self.proxy: PgProxy | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.pty: PtyEndpoint | None = None
        self.home: Path | None = None
        self._pumps: list[asyncio.Future[None]] = []
        self._exited: asyncio.Future[int | None] | None = None

    async def open(self, res: PgResource, password_file: Path, *, command: str | None, application_name: str,
                   judge: Callable[[str], Decision], hold: Callable[[Decision], Awaitable[dict[str, Any]]],
                   note: Callable[[Decision], None], withdraw: Callable[[], None], sandbox: Sandbox,
                   term_type: str = "dumb", cols: int = 80, rows: int = 24) -> None:
        if command is None and not res.restrict and not sandbox.active:
            raise TargetError("interactive psql on a resource without `restrict: true` needs the session sandbox "
                              "(bubblewrap) on the bastion; use: ssh ... RES -- \"SQL\"")
        if command is not None and command.lstrip().startswith("\\"):
            raise TargetError("psql meta-commands (\\...) are not accepted; send SQL")
        try:
            password = password_file.read_text().strip()
        except OSError:
            raise TargetError("the bastion cannot load this resource's credential (see daemon log)") from None
        self.home = Path(tempfile.mkdtemp(prefix="bastion-psql-"))
        sandbox.prepare(self.home)
        target = Target(res.host, res.port, res.database, res.user, res.tls.mode, res.tls.ca_file)
        masking = [MaskRule(m.table.lower(), m.column.lower(), m.style, m.keep) for m in res.masking]
        self.proxy = PgProxy(target, password, judge=judge, hold=hold, note=note, withdraw=withdraw,
                             socket_dir=self.home / "sock", application_name=application_name, masking=masking)
        del password
        sock = await self.proxy.start()
        sandbox.prepare(sock.parent)
        sandbox.prepare(sock)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.home), "LANG": "C.UTF-8",
               "PGHOST": str(self.home / "sock"), "PGUSER": res.user, "PGDATABASE": res.database,
               "PAGER": "", "PSQL_PAGER": "", "PSQLRC": "/dev/null", "PSQL_HISTORY": "/dev/null",
               "EDITOR": "/bin/false", "VISUAL": "/bin/false", "SHELL": "/bin/false"}
        psql = find_psql()
        if psql is None:
            raise TargetError("psql is not installed on the bastion")
        if command is None:
            rc = self.home / "psqlrc"
            lines = ["\\set HISTSIZE 0"]
            if res.restrict:
                lines.append(f"\\restrict {secrets.token_hex(16)}")  # the key never leaves the bastion
            rc.write_text("\n".join(lines) + "\n")
            env.update(PSQLRC=str(rc), TERM=term_type)
            argv = sandbox.wrap([psql], home=self.home, env=env)
            proc = PtyProcess(argv, env={} if sandbox.active else env, cols=cols, rows=rows, cwd=str(self.home),
                              wrapper=sandbox.active)
            loop = asyncio.get_running_loop()
            self._exited = loop.create_future()
            fut = self._exited

            def on_exit(status: int | None) -> None:
                if not fut.done():
                    fut.set_result(status)

            self.pty = PtyEndpoint(proc, self.relay, on_exit, owner=self)
            return
        argv = sandbox.wrap([psql, "-X", "-v", "ON_ERROR_STOP=1", "-c", command], home=self.home, env=env)
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={} if sandbox.active else env,
            cwd=str(self.home), start_new_session=True,
            preexec_fn=ignore_keyboard_signals if sandbox.active else None)
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
            return TargetExit(None, signal.Signals(-status).name.removeprefix("SIG"), f"psql killed by {-status}")
        return TargetExit(status, None, f"psql exited with status {status}")

    def close(self) -> None:
        if self.pty is not None:
            self.pty.close()
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
        if self.proxy is not None:
            asyncio.ensure_future(self.proxy.close())
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)

    # -- Endpoint protocol: the pty's when interactive; exec has no stdin (the SQL is the command) ----------
    def write(self, data: bytes) -> None:
        if self.pty is not None:
            self.pty.write(data)

    def resize(self, cols: int, rows: int) -> None:
        if self.pty is not None:
            self.pty.resize(cols, rows)

    def signal(self, name: str) -> None:
        if self.pty is not None:
            self.pty.signal(name)
        elif name == "INT" and self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(OSError):  # the group: psql itself, inside the sandbox
                os.killpg(self.proc.pid, signal.SIGINT)  # psql turns it into a CancelRequest

    def send_break(self, msec: int) -> None:
        self.signal("INT")

    def eof(self) -> None:
        if self.pty is not None:
            self.pty.eof()

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
