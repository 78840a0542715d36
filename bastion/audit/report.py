"""Evidence for audits: what happened in a period (sessions, blocked commands, approvals with requester and
approvers, terminations) as JSON or CSV; and retention, which prunes old recordings but leaves a chained record of
each one it removed."""

from __future__ import annotations

import csv
import io
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, text, update

from bastion.audit.transfers import transfer_totals
from bastion.store.db import Store, _aware, now
from bastion.store.models import ApprovalDecision, ApprovalRequest, AuditEvent, ChainHead, Recording, Session
from recorder.storage import RecordingStorage

__all__ = ["CSV_COLUMNS", "build_report", "prune", "report_csv"]

log = logging.getLogger(__name__)
BLOCKED = ("block", "blocked")


def _iso(dt: datetime | None) -> str | None:
    dt = _aware(dt)
    return dt.isoformat() if dt else None


def build_report(store: Store, since: datetime, until: datetime) -> dict[str, Any]:
    """Everything auditors ask for about ``[since, until)``."""
    out: dict[str, Any] = {"from": since.isoformat(), "to": until.isoformat(), "generated_at": now().isoformat()}
    out["sessions"] = [r.as_dict() for r in reversed(store.sessions(100000, since=since, until=until))]
    with store.tx() as s:
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.ts >= since, AuditEvent.ts < until)
                                .order_by(AuditEvent.seq)))
        out["blocked"] = [{"time": _iso(e.ts), "user": e.actor, "resource": e.resource, "session": e.session_id,
                           "action": e.action, "rule": (e.detail or {}).get("rule"),
                           "text": (e.detail or {}).get("text")} for e in events if e.outcome in BLOCKED]
        out["terminations"] = [{"time": _iso(e.ts), "by": e.actor, "user": (e.detail or {}).get("user"),
                                "resource": e.resource, "session": e.session_id,
                                "reason": (e.detail or {}).get("reason")}
                               for e in events if e.action == "session.terminate"]
        moderators: dict[str, list[str]] = {}  # who watched each moderated session (session.moderate joined)
        for e in events:
            if e.action == "session.moderate" and e.outcome == "joined" and e.session_id:
                seen = moderators.setdefault(e.session_id, [])
                if e.actor not in seen:
                    seen.append(e.actor)
        for sess in out["sessions"]:
            if sess["id"] in moderators:
                sess["moderated_by"] = moderators[sess["id"]]
        out["pruned"] = [{"time": _iso(e.ts), "session": e.session_id, "sha256": (e.detail or {}).get("sha256")}
                         for e in events if e.action == "recording.pruned"]
        approvals = []
        for r in s.scalars(select(ApprovalRequest).where(ApprovalRequest.created_at >= since,
                                                         ApprovalRequest.created_at < until)
                           .order_by(ApprovalRequest.id)):
            decisions = list(s.scalars(select(ApprovalDecision).where(ApprovalDecision.request_id == r.id)
                                       .order_by(ApprovalDecision.id)))
            approvals.append({
                "id": r.id, "requested_at": _iso(r.created_at), "requester": r.requester, "resource": r.resource,
                "session": r.session_id, "text": r.text, "rule": r.rule, "approvals_needed": r.approvals_needed,
                "status": r.status, "status_reason": r.status_reason, "decided_at": _iso(r.decided_at),
                "approvers": [d.reviewer for d in decisions if d.approve],
                "deniers": [d.reviewer for d in decisions if not d.approve],
                "decisions": [{"reviewer": d.reviewer, "approve": d.approve, "reason": d.reason, "at": _iso(d.ts)}
                              for d in decisions],
                # segregation of duties: the store refuses this; the report shows it was never so
                "self_approved": any(d.reviewer == r.requester for d in decisions),
            })
        out["approvals"] = approvals
        out["chain_heads"] = {h.name: {"seq": h.seq, "head": h.head} for h in s.scalars(select(ChainHead))}
    out["transfers"] = transfer_totals(out["sessions"])
    # what an auditor still owes a look: sessions with a risk (blocked, held, denied, terminated, masking refusals,
    # transfers) that nobody has given a verdict
    risky = store.sessions(100000, since=since, until=until, risk="any", reviewed=False)
    notes = store.session_notes([r.id for r in risky])
    out["unreviewed_risky"] = [{"session": r.id, "user": r.user, "resource": r.resource,
                                "started_at": r.as_dict()["started_at"], "outcome": r.outcome,
                                "risk": notes[r.id]["risk"]} for r in reversed(risky)]
    out["summary"] = {"sessions": len(out["sessions"]), "blocked": len(out["blocked"]),
                      "approvals": len(out["approvals"]), "approved": sum(a["status"] == "approved"
                                                                          for a in out["approvals"]),
                      "unreviewed_risky": len(out["unreviewed_risky"]),
                      "terminations": len(out["terminations"]), "self_approved": sum(
                          a["self_approved"] for a in out["approvals"])}
    return out


CSV_COLUMNS = ["record", "time", "user", "resource", "session", "action", "outcome", "rule", "text", "approvers",
               "detail"]


def report_csv(rep: dict[str, Any]) -> str:
    """One CSV: a ``record`` column says what each row is (session, blocked, approval, termination, transfers,
    pruned)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_COLUMNS, extrasaction="ignore")
    w.writeheader()
    for s in rep["sessions"]:
        w.writerow({"record": "session", "time": s["started_at"], "user": s["user"], "resource": s["resource"],
                    "session": s["id"], "action": s["mode"], "outcome": s["outcome"], "text": s["command"] or "",
                    "detail": f"ended {s['ended_at']}; exit {s['exit_status']}; from {s['client_addr']}"
                              + (f"; moderated by {' '.join(s['moderated_by'])}" if s.get("moderated_by") else "")})
    for b in rep["blocked"]:
        w.writerow({"record": "blocked", **b, "outcome": "blocked"})
    for a in rep["approvals"]:
        w.writerow({"record": "approval", "time": a["requested_at"], "user": a["requester"],
                    "resource": a["resource"], "session": a["session"], "action": "require_approval",
                    "outcome": a["status"], "rule": a["rule"], "text": a["text"],
                    "approvers": " ".join(a["approvers"]),
                    "detail": "; ".join(f"{d['reviewer']} {'approved' if d['approve'] else 'denied'}"
                                        + (f": {d['reason']}" if d["reason"] else "") for d in a["decisions"])
                    + ("; SELF-APPROVED" if a["self_approved"] else "")})
    for t in rep["terminations"]:
        w.writerow({"record": "termination", "time": t["time"], "user": t["user"], "resource": t["resource"],
                    "session": t["session"], "action": "session.terminate", "outcome": "terminated",
                    "text": t["reason"], "approvers": t["by"]})
    for t in rep.get("transfers", []):
        w.writerow({"record": "transfers", "user": t["user"], "resource": t["resource"],
                    "detail": f"{t['sessions']} sessions; up {t['files_up']} files {t['bytes_up']} bytes; "
                              f"down {t['files_down']} files {t['bytes_down']} bytes"
                              + (f"; {t['unread']} logs not read" if t["unread"] else "")})
    for u in rep.get("unreviewed_risky", []):
        w.writerow({"record": "unreviewed", "time": u["started_at"], "user": u["user"], "resource": u["resource"],
                    "session": u["session"], "outcome": u["outcome"], "detail": "risk: " + ", ".join(u["risk"])})
    for p in rep["pruned"]:
        w.writerow({"record": "pruned", "time": p["time"], "session": p["session"], "action": "recording.pruned",
                    "detail": f"sha256 {p['sha256']}"})
    return buf.getvalue()


def prune(store: Store, days: float, storage: RecordingStorage, *, dry_run: bool = False,
          at: datetime | None = None) -> list[dict[str, Any]]:
    """Remove recordings of sessions that started more than ``days`` ago: the file (or object), its seek index and
    its search rows. The recording stays in the hash chain (``pruned_at`` set) and each removal is an audit event,
    itself chained, naming the session and the file's SHA-256."""
    cutoff = (at or datetime.now(UTC)) - timedelta(days=days)
    with store.tx() as s:
        rows = s.execute(select(Recording.session_id, Recording.path, Recording.sha256)
                         .join(Session, Session.id == Recording.session_id)
                         .where(Session.started_at < cutoff, Recording.chain.is_not(None),
                                Recording.pruned_at.is_(None)).order_by(Recording.seq)).all()
    done = []
    for sid, path, sha in rows:
        item = {"session": sid, "path": path, "sha256": sha}
        if dry_run:
            done.append(item)
            continue
        with store.tx() as s:  # claimed once: another node pruning at the same time skips it
            claimed = rowcount(s.execute(update(Recording).where(Recording.session_id == sid,
                                                                Recording.pruned_at.is_(None))
                                         .values(pruned_at=now())))
            s.execute(text("DELETE FROM recording_text WHERE session_id = :sid"), {"sid": sid})
        if not claimed:
            continue
        done.append(item)
        for problem in storage.delete(path):
            log.error("retention: %s", problem)
        store.audit("bastion", "recording.pruned", "ok", session_id=sid, sha256=sha, path=path, retention_days=days)
    return done


def rowcount(result: Any) -> int:
    """Rows an UPDATE touched (SQLAlchemy types ``Session.execute`` as a plain Result; for DML it is a
    CursorResult, which has the count)."""
    return int(result.rowcount)
