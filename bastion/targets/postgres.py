"""PostgreSQL targets: psql talks to a per-session wire proxy; the daemon holds the password and judges the SQL.

Only the exec form is offered for now (``ssh bastion DB -- "SQL"``): psql runs with ``-c``, which sends SQL to the
server verbatim; a command that starts with a backslash (a psql meta-command, which psql would run itself, e.g.
``\\! sh``) is refused before psql starts. Interactive psql waits for the privilege separation of session
processes: until then a psql meta-command shell would run as the daemon's user.
"""

from __future__ import annotations

import asyncio
import os
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
from bastion.relay import Relay
from bastion.targets.ssh import TargetError, TargetExit
from policies.engine import Decision


class PsqlExec:
    """A relay endpoint: ``psql -c SQL`` through this session's wire proxy, stdout and stderr kept apart."""

    def __init__(self, relay: Relay):
        self.relay = relay
        self.proxy: PgProxy | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.home: Path | None = None
        self._pumps: list[asyncio.Future[None]] = []

    async def open(self, res: PgResource, password_file: Path, *, command: str, application_name: str,
                   judge: Callable[[str], Decision], hold: Callable[[Decision], Awaitable[dict[str, Any]]],
                   note: Callable[[Decision], None], withdraw: Callable[[], None]) -> None:
        if command.lstrip().startswith("\\"):
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
        assert self.proc is not None
        await asyncio.gather(*self._pumps, return_exceptions=True)
        status = await self.proc.wait()
        if status < 0:
            return TargetExit(None, signal.Signals(-status).name.removeprefix("SIG"), f"psql killed by {-status}")
        return TargetExit(status, None, f"psql exited with status {status}")

    def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
        if self.proxy is not None:
            asyncio.ensure_future(self.proxy.close())
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)

    # -- Endpoint protocol (no stdin: the SQL is the command) ----------------------------------------------
    def write(self, data: bytes) -> None:
        pass

    def resize(self, cols: int, rows: int) -> None:
        pass

    def signal(self, name: str) -> None:
        if name == "INT" and self.proc is not None and self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGINT)  # psql turns it into a CancelRequest

    def send_break(self, msec: int) -> None:
        self.signal("INT")

    def eof(self) -> None:
        pass

    def pending(self) -> int:
        return 0

    def echo_known(self) -> bool | None:
        return True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass
