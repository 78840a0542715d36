"""Policy judgement of each statement before it is forwarded: allow, warn, block, or hold for a reviewer.

Every Query and Parse is judged on its exact text, and masking may refuse it on its own (a masked column compared
or copied elsewhere); a refused statement never reaches the server, and the client gets an ErrorResponse naming the
rule. A statement a rule warns about runs after a NoticeResponse naming the rule and its reason (psql prints it as
``NOTICE:  bastion: warning (rule 'x'): why``). Every decision is noted (``note``) so that the session's audit shows
what was asked and what was done.
"""

from __future__ import annotations

import logging
from typing import Any

from bastion.proxies.pg.fieldplan import FieldPlans
from bastion.proxies.pg.protocol import error_response, notice_response
from policies.engine import Action, Decision
from policies.sqlmask import Analysis

log = logging.getLogger(__name__)


class Judging(FieldPlans):
    """The policy layer of the proxy."""

    async def _decide(self, sql: str, analyses: list[Analysis] | None = None) -> tuple[bytes | None, Decision, bool]:
        """(None to forward ``sql``, or the ErrorResponse the client gets instead; the decision; whether it reads
        masked data). ``analyses`` (a Query) receives the lineage of each statement; without it (the extended
        protocol) a statement that reads masked data marks the whole batch so. A decision with ``max_rows`` runs
        measured (the caller's part)."""
        d = self.judge(sql)
        lineage, refusal = self._lineage(sql) if d.action != Action.BLOCK else ([], None)
        if refusal is not None:  # masking refuses before anyone is asked to approve
            return refusal, d, False
        self.note(d)
        if analyses is not None:
            analyses.extend(lineage)
        reads = any(a.reads_masked for a in lineage)
        if d.action in (Action.ALLOW, Action.WARN):
            if d.action == Action.WARN and self.client is not None:  # said before the statement runs
                self.client.write(notice_response(f"bastion: {d.warning()}"))
            if reads and analyses is None:
                self.ext_reads = self.batch.reads = True
            return None, d, reads
        if d.action == Action.BLOCK:
            return error_response(f"bastion: {d.refusal()}", hint=f"statement: {sql[:200]}"), d, reads
        result = await self._hold(d)
        if result.get("status") == "approved":
            if reads and analyses is None:
                self.ext_reads = self.batch.reads = True
            return None, d, reads
        return error_response(f"bastion: request {result.get('status')}: {result.get('status_reason', '')}"), d, reads

    async def _hold(self, d: Decision) -> dict[str, Any]:
        """Wait for a reviewer (a CancelRequest withdraws); any failure is a denial."""
        self.holding = True
        try:
            return await self.hold(d)
        except Exception as e:  # RPC or store failure = deny
            log.exception("approval failed")
            return {"status": "failed", "status_reason": f"approval could not be obtained ({e})"}
        finally:
            self.holding = False

    def _refusal(self, over: Decision | None, why: str, text: str, limit: int | None = None) -> bytes:
        """A refusal of something that cannot run under a row limit (or of a name that is the bastion's), noted like
        any other decision."""
        rule = over.rule if over is not None else None
        self.note(Decision(Action.BLOCK, rule, why, text))
        limit = limit if limit is not None or over is None else over.max_rows
        what = f" (rule {rule!r}: at most {limit} rows)" if rule and limit is not None else ""
        return error_response(f"bastion: refused: {why}{what}", code="0A000" if over is not None else "42501")
