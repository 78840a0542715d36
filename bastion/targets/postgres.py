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
import secrets
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bastion.config import PgResource
from bastion.proxies.pg.masking import MaskRule
from bastion.proxies.pg.proxy import PgProxy
from bastion.proxies.pg.upstream import Target
from bastion.sandbox import Sandbox, find_psql
from bastion.targets.local import LocalClient
from bastion.targets.ssh import TargetError
from bastion.terminal.relay import Relay
from policies.engine import Decision


class PsqlExec(LocalClient):
    """A relay endpoint: psql through this session's wire proxy; ``-c SQL`` with stdout and stderr kept apart, or
    (``command`` None) an interactive psql on its own pty."""

    label = "psql"

    def __init__(self, relay: Relay):
        super().__init__(relay)
        self.proxy: PgProxy | None = None

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
        masking = [MaskRule(m.table.lower(), m.column.lower(), m.style, m.keep, m.predicates) for m in res.masking]
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
            self._spawn_pty([psql], env, sandbox, cols, rows)
            return
        await self._spawn_pipes([psql, "-X", "-v", "ON_ERROR_STOP=1", "-c", command], env, sandbox)

    def close(self) -> None:
        super().close()
        if self.proxy is not None:
            asyncio.ensure_future(self.proxy.close())
