"""PostgreSQL targets: psql talks to a per-session wire proxy; the daemon holds the password and judges the SQL.

psql runs in the session sandbox (``bastion.sandbox``: no network but the proxy's unix socket, no secrets, a
throwaway home), with an empty environment, no pager, editor or history. Exec form (``ssh bastion DB -- "SQL"``):
``psql -c`` sends the SQL to the server verbatim; a command that starts with a backslash is refused before psql
starts. Interactive psql: with ``restrict: true`` a bastion-owned psqlrc puts psql in ``\\restrict`` mode with a key
the operator never sees, so no meta-command runs at all; without it the session's line filter refuses the
meta-commands that leave SQL (``policies.psql``) and the sandbox makes any that slip past harmless, so an unrestricted
interactive psql is only offered when the sandbox is active. A restricted psql refuses ``\\q`` too: the operator's
typed lines pass a :class:`~bastion.terminal.psqlquit.QuitWatch`, which ends psql as Ctrl-D would on a quit form
typed where psql itself would quit (an unrestricted psql quits on its own).
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from bastion.config import PgResource
from bastion.config.resources import AnyResource as Resource
from bastion.proxies.pg.masking import MaskRule
from bastion.proxies.pg.proxy import PgProxy
from bastion.proxies.pg.upstream import Target
from bastion.sandbox import find_psql
from bastion.targets.base import LineFilter, OpenRequest, Proxied, TargetError
from bastion.targets.local import LocalClient
from bastion.terminal.psqlquit import QuitWatch
from bastion.terminal.relay import Relay


class PsqlExec(LocalClient):
    """A relay endpoint: psql through this session's wire proxy; ``-c SQL`` with stdout and stderr kept apart, or
    (``command`` None) an interactive psql on its own pty."""

    label = "psql"
    proxied: ClassVar[Proxied | None] = "sql"

    def __init__(self, relay: Relay):
        super().__init__(relay)
        self.proxy: PgProxy | None = None
        self.quit: QuitWatch | None = None  # a restricted interactive psql: what ends it on \q

    @staticmethod
    def line_filter(res: Resource, command: str | None, pty: bool) -> LineFilter | None:
        """An unrestricted interactive psql: its meta-commands are read at the keyboard (SQL is judged at the wire)."""
        return "psql" if command is None and isinstance(res, PgResource) and not res.restrict else None

    async def open(self, req: OpenRequest) -> None:
        res, command, sandbox, hooks = req.resource, req.command, req.sandbox, req.hooks
        assert isinstance(res, PgResource) and hooks is not None
        if command is None and not req.pty:
            raise TargetError("an interactive psql needs a terminal (ssh -t)")
        password_file = req.config.resolve(res.credential.password_file)
        application_name = f"bastion:{req.user}:{req.session_id}"
        term_type, cols, rows = req.term_type, req.cols, req.rows
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
        self.proxy = PgProxy(target, password, judge=hooks.judge, hold=hooks.hold, note=hooks.note,
                             withdraw=hooks.withdraw,
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
            if res.restrict:  # psql's default prompts, whatever a system psqlrc says: the quit watch reads them
                lines += ["\\set PROMPT1 '%/%R%x%# '", "\\set PROMPT2 '%/%R%x%# '",
                          f"\\restrict {secrets.token_hex(16)}"]  # the key never leaves the bastion
            rc.write_text("\n".join(lines) + "\n")
            env.update(PSQLRC=str(rc), TERM=term_type)
            self._spawn_pty([psql], env, sandbox, cols, rows)
            if res.restrict:
                self._watch_quit(res.database, hooks.event, cols)
            return
        await self._spawn_pipes([psql, "-X", "-v", "ON_ERROR_STOP=1", "-c", command], env, sandbox)

    def _watch_quit(self, database: str, event: Callable[[str], None], cols: int) -> None:
        """In ``\\restrict`` mode psql refuses ``\\q``: the operator's keys pass a quit watch, which reads psql's
        screen line for its prompt."""
        assert self.pty is not None

        def quitting(line: str) -> None:
            event(f"psql: {line.strip()[:80] or 'a quit form'} ends the session (restricted psql: its input is "
                  "ended as Ctrl-D would)")

        self.quit = QuitWatch(database, self.pty.write, quitting, cols)
        self.pty.seen = self.quit.output

    def write(self, data: bytes) -> None:
        if self.quit is not None:
            self.quit.input(data)
        else:
            super().write(data)

    def resize(self, cols: int, rows: int) -> None:
        if self.quit is not None:
            self.quit.cols = cols
        super().resize(cols, rows)

    def close(self) -> None:
        super().close()
        if self.proxy is not None:
            asyncio.ensure_future(self.proxy.close())
