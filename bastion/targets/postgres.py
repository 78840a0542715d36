"""PostgreSQL targets: psql talks to a per-session wire proxy; the daemon holds the password and judges the SQL.

Exec form (``ssh bastion DB -- "SQL"``): psql runs with ``-c``, which sends SQL to the server verbatim; a command
that starts with a backslash (a psql meta-command that psql would run itself, e.g. ``\\! sh``) is refused before
psql starts. Interactive psql is offered for resources with ``restrict: true``: a bastion-owned psqlrc puts psql in
``\\restrict`` mode with a key the operator never sees, so no meta-command (shell, files, ``\\c``) runs. Without
restrict it waits for the privilege separation of session processes (a ``\\!`` shell would run as the daemon's user).
"""

from __future__ import annotations

import asyncio
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
from bastion.ptyproc import PtyProcess
from bastion.relay import PtyEndpoint, Relay
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
                   note: Callable[[Decision], None], withdraw: Callable[[], None], term_type: str = "dumb",
                   cols: int = 80, rows: int = 24) -> None:
        if command is None and not res.restrict:
            raise TargetError("interactive psql needs `restrict: true` on this resource until session processes "
                              "are privilege-separated; use: ssh ... RES -- \"SQL\"")
        if command is not None and command.lstrip().startswith("\\"):
            raise TargetError("psql meta-commands (\\...) are not accepted; send SQL")
        try:
            password = password_file.read_text().strip()
        except OSError:
            raise TargetError("the bastion cannot load this resource's credential (see daemon log)") from None
        self.home = Path(tempfile.mkdtemp(prefix="bastion-psql-"))
        target = Target(res.host, res.port, res.database, res.user, res.tls.mode, res.tls.ca_file)
        masking = [MaskRule(m.table.lower(), m.column.lower(), m.style, m.keep) for m in res.masking]
        self.proxy = PgProxy(target, password, judge=judge, hold=hold, note=note, withdraw=withdraw,
                             socket_dir=self.home / "sock", application_name=application_name, masking=masking)
        del password
        await self.proxy.start()
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.home), "LANG": "C.UTF-8",
               "PGHOST": str(self.home / "sock"), "PGUSER": res.user, "PGDATABASE": res.database,
               "PAGER": "", "PSQL_PAGER": "", "PSQLRC": "/dev/null", "PSQL_HISTORY": "/dev/null",
               "EDITOR": "/bin/false", "VISUAL": "/bin/false", "SHELL": "/bin/false"}
        psql = shutil.which("psql", path=env["PATH"])
        if psql is None:
            raise TargetError("psql is not installed on the bastion")
        if command is None:
            rc = self.home / "psqlrc"
            rc.write_text(f"\\set HISTSIZE 0\n\\restrict {secrets.token_hex(16)}\n")  # the key never leaves
            env.update(PSQLRC=str(rc), TERM=term_type)
            proc = PtyProcess([psql], env=env, cols=cols, rows=rows, cwd=str(self.home))
            loop = asyncio.get_running_loop()
            self._exited = loop.create_future()
            fut = self._exited

            def on_exit(status: int | None) -> None:
                if not fut.done():
                    fut.set_result(status)

            self.pty = PtyEndpoint(proc, self.relay, on_exit, owner=self)
            return
        self.proc = await asyncio.create_subprocess_exec(
            psql, "-X", "-v", "ON_ERROR_STOP=1", "-c", command, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=str(self.home),
            start_new_session=True)
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
            os.kill(self.proc.pid, signal.SIGINT)  # psql turns it into a CancelRequest

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
