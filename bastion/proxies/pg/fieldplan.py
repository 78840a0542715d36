"""Masking plans: per output column of a result, the rule that masks it, or None to show it as the server sent it.

The server's RowDescription names, per column, the table column it comes from (table OID and column number), or
0 for anything computed. A column of a masked table column is masked whatever it is called. A computed column is
masked unless the column lineage of the statement (``policies.sqlmask``) shows it derives from clean columns only;
to use that, the proxy must know which statement a result belongs to: ``groups`` holds, per forwarded Query, the
lineage of each of its statements, consumed one CommandComplete at a time.
"""

from __future__ import annotations

from pglast import parse_sql
from pglast.parser import ParseError

from bastion.proxies.pg.errors import scrub
from bastion.proxies.pg.masking import Field, MaskRule
from bastion.proxies.pg.protocol import error_response
from bastion.proxies.pg.state import ProxyState
from policies.engine import Action, Decision
from policies.sqlmask import Analysis, analyze

COMPUTED = MaskRule("(computed)", "(computed)", "full")
WITHHELD = MaskRule("(binary)", "(binary)", "null")  # a masked value in binary format, not text: sent as NULL
TEXT_OIDS = frozenset({25, 1043, 1042, 19, 18, 705})  # text, varchar, bpchar, name, "char", unknown


def field_plan(fields: list[Field], masks: dict[tuple[int, int], MaskRule], clean: frozenset[int], reads: bool,
               outputs: list[bool] | None) -> list[MaskRule | None]:
    """Per output column: its masking rule, COMPUTED (masked whole), WITHHELD, or None (shown as it is). ``reads``:
    the statement reads masked data; ``outputs``: per output column, whether its lineage reaches masked data (used
    only if it has one entry per column)."""
    if outputs is not None and len(outputs) != len(fields):
        outputs = None
    plan: list[MaskRule | None] = []
    for i, f in enumerate(fields):
        rule = masks.get((f.table_oid, f.attnum))
        known_clean = f.table_oid != 0 and f.attnum > 0 and f.table_oid in clean
        computed_clean = f.table_oid == 0 and outputs is not None and not outputs[i]
        if f.fmt == 1 and f.type_oid not in TEXT_OIDS and (
                rule is not None or reads and not known_clean and not computed_clean):
            plan.append(WITHHELD)  # a binary value that is not text cannot be shown masked: withheld
        elif rule is not None or not reads:
            plan.append(rule)
        elif known_clean:
            plan.append(None)  # a column of a known relation that is not masked, as the server reports it
        elif computed_clean:
            plan.append(None)  # computed from clean columns only (lineage)
        else:
            plan.append(COMPUTED)  # a whole row, a view over masked data, an unknown relation, or derived
    return plan


class FieldPlans(ProxyState):
    """The masking layer of the proxy: the lineage of what the client sends, and the plan for what comes back."""

    def _lineage(self, sql: str) -> tuple[list[Analysis], bytes | None]:
        """The masking analysis of each statement of ``sql``, or the refusal the client gets instead."""
        if not self.masking:
            return [], None
        try:
            stmts = parse_sql(sql)
        except ParseError:
            return [], None  # the policy refuses it with the parser's message
        out: list[Analysis] = []
        for rs in stmts:
            assert rs.stmt is not None  # a RawStmt always holds its statement
            a = analyze(rs.stmt, self.catalog)
            if a.refusal is not None:
                self.note(Decision(Action.BLOCK, a.rule, a.refusal, sql))
                return [], error_response(f"bastion: refused by rule {a.rule!r}: {a.refusal}",
                                          hint="masked columns can be selected (they come back masked); they "
                                               "cannot be compared, copied or returned elsewhere")
            out.append(a)
        return out, None

    def _current(self) -> tuple[Analysis | None, bool]:
        """The lineage of the statement whose results arrive now, and whether it reads masked data."""
        if not self.groups or self.groups[0] is None:
            return None, self.ext_reads
        group = self.groups[0]
        if not group:
            return None, True  # results we cannot place: fail closed
        return group[0], group[0].reads_masked

    def _field_plan(self, fields: list[Field]) -> list[MaskRule | None]:
        """The plan for the result now starting (its RowDescription's ``fields``)."""
        a, reads = self._current()
        outputs = a.outputs if a is not None else None
        if a is None and (not self.groups or self.groups[0] is None) and len(self._inflight_bound) == 1:
            outputs = self._inflight_bound[0]  # exactly one execution in flight: these are its results
        return field_plan(fields, self.masks, self.clean, reads, outputs)

    def _scrub(self, payload: bytes, reads: bool | None = None) -> bytes:
        """An error or notice as the client may see it; ``reads`` defaults to the statement running now."""
        return scrub(payload, self.masking, self._current()[1] if reads is None else reads)
