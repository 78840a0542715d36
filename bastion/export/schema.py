"""The exported form of an audit event (version 1, docs/audit-export.md): one JSON object per event, compact, keys
sorted, ASCII only (anything else ``\\u``-escaped), so the line for an event is the same bytes every time it is
sent -- a retry, a replay, another node -- and safe in any syslog or journal field.

Its fields are exactly what the chain hashes (:func:`bastion.store.chain.audit_link`), so a receiver can check
each event's ``hash`` and that ``prev_hash`` is the previous event's ``hash``: an altered, dropped or reordered
event shows at the receiver as it does in ``bastion audit verify`` (:func:`link`).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from bastion.store.chain import audit_link, ts_text
from bastion.store.models import AuditEvent

SCHEMA = "bastion.audit"
VERSION = 1  # a change that breaks receivers gets a new number; keys may be added within a version
KEYS = ("schema", "version", "seq", "hash", "prev_hash", "time", "actor", "action", "outcome", "resource",
        "session_id", "client_addr", "detail", "truncated")
"""Every key of a version 1 event; each is always present (``null`` when it does not apply)."""

WARNING_OUTCOMES = frozenset({"block", "blocked", "deny", "denied", "refused", "failed", "fail", "error",
                              "terminated", "revoked", "interrupted", "expired", "cancelled"})
"""Outcomes sent at syslog severity warning (4); every other event is informational (6)."""


def record(ev: AuditEvent) -> dict[str, Any]:
    """An audit event as exported."""
    return {"schema": SCHEMA, "version": VERSION, "seq": ev.seq, "hash": ev.hash, "prev_hash": ev.prev_hash,
            "time": ts_text(ev.ts), "actor": ev.actor, "action": ev.action, "outcome": ev.outcome,
            "resource": ev.resource, "session_id": ev.session_id, "client_addr": ev.client_addr,
            "detail": dict(ev.detail or {}), "truncated": False}


def encode(rec: dict[str, Any]) -> str:
    """The JSON line (without its newline)."""
    return json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def shrunk(rec: dict[str, Any], limit: int) -> str:
    """The line, at most ``limit`` bytes when it can be: a bigger event's ``detail`` is replaced by
    ``{"bytes": N}`` (the size of the detail it had) and ``truncated`` is true. Its hash no longer checks; the
    whole event is in the store (``bastion audit export --to-file``)."""
    line = encode(rec)
    if len(line) <= limit:
        return line
    size = len(encode(rec["detail"]))
    return encode(rec | {"detail": {"bytes": size}, "truncated": True})


def link(rec: dict[str, Any]) -> str:
    """The hash the chain gives this exported event (equal to ``rec["hash"]`` unless it was altered or
    truncated): what a receiver computes to check it."""
    return audit_link(rec["prev_hash"], rec["seq"], ts=datetime.fromisoformat(rec["time"]), actor=rec["actor"],
                      action=rec["action"], outcome=rec["outcome"], resource=rec["resource"],
                      session_id=rec["session_id"], client_addr=rec["client_addr"], detail=rec["detail"])


def severity(rec: dict[str, Any]) -> int:
    """The syslog severity: 4 (warning) for refusals and abnormal ends, 6 (informational) otherwise."""
    return 4 if rec["outcome"] in WARNING_OUTCOMES else 6


def summary(rec: dict[str, Any]) -> str:
    """One human line (the journal's MESSAGE): ``audit #SEQ ACTOR ACTION OUTCOME [on RESOURCE] [session SID]``."""
    out = f"audit #{rec['seq']} {rec['actor']} {rec['action']} {rec['outcome']}"
    if rec["resource"]:
        out += f" on {rec['resource']}"
    if rec["session_id"]:
        out += f" session {rec['session_id']}"
    return "".join(c if c.isprintable() else "?" for c in out)[:500]
