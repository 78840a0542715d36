"""What each kind of target is sent, rendered from the event's JSON body (:func:`bastion.notify.events.payload`).

Pure functions, no I/O: the webhook's signed body and headers, a Slack-compatible incoming-webhook message, and a
plain-text email. None of them carries a secret: the body is the event, the signature is over it, and the texts
are made from its fields only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

TITLES = {
    "request.created": "Approval needed", "request.decided": "Request decided", "request.expired": "Request expired",
    "request.withdrawn": "Request withdrawn", "request.cancelled": "Request cancelled",
    "access.granted": "Access granted", "access.revoked": "Access revoked",
    "session.terminated": "Session terminated", "command.blocked": "Command blocked",
}
SIGNATURE = "X-Bastion-Signature"
TIMESTAMP = "X-Bastion-Timestamp"
MAX_TEXT = 2900  # Slack refuses a section text over 3000 characters


def body_bytes(body: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact, keys sorted, UTF-8."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """``sha256=HEX``: HMAC-SHA256 with the target's secret over ``TIMESTAMP.BODY`` (the timestamp is in the MAC,
    so a receiver that refuses old timestamps refuses replays)."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={mac}"


def verify(secret: bytes, timestamp: str, body: bytes, signature: str, *, now: float, tolerance: float = 300) -> bool:
    """What a receiver does (docs/notifications.md has the same in a few lines): the MAC matches and the
    timestamp is recent."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


def webhook_request(body: dict[str, Any], secret: bytes, timestamp: int) -> tuple[bytes, dict[str, str]]:
    data = body_bytes(body)
    return data, {"Content-Type": "application/json", "User-Agent": "bastion-notify/1",
                  TIMESTAMP: str(timestamp), SIGNATURE: sign(secret, timestamp, data),
                  "X-Bastion-Event": str(body["event"]), "X-Bastion-Delivery": str(body["id"])}


def _parse(iso: str | None) -> datetime | None:
    if not iso:
        return None
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def age(body: dict[str, Any], now: datetime) -> str:
    """How long ago the request (else the event) began, as people say it."""
    start = _parse(body.get("created_at")) or _parse(body.get("time")) or now
    secs = max(0, int((now - start).total_seconds()))
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m {secs % 60}s"
    return f"{secs // 3600}h {secs % 3600 // 60}m"


def summary(body: dict[str, Any]) -> str:
    """One line: ``Approval needed: #12 alice on web (rule chmod-needs-approval)``."""
    title = TITLES.get(body["event"], body["event"])
    rid = f"#{body['request_id']} " if body.get("request_id") is not None else ""
    who = body.get("user") or body.get("actor") or "?"
    line = f"{title}: {rid}{who} on {body.get('resource') or '?'}"
    if body["event"] == "request.decided" and body.get("status"):
        line += f" ({body['status']})"
    return line


def _fields(body: dict[str, Any], now: datetime) -> list[tuple[str, str]]:
    """Who, where, rule, age, approvals, and who acted: the facts every text shows."""
    out = [("Who", str(body.get("user") or "?")),
           ("Where", f"{body.get('resource') or '?'} (node {body.get('node')})"),
           ("Rule", str(body.get("rule") or "-")), ("Age", age(body, now))]
    if body.get("approvals"):
        out.append(("Approvals", f"{body['approvals']['given']} of {body['approvals']['needed']}"))
    if body.get("actor") and body.get("actor") != body.get("user"):
        out.append(("By", str(body["actor"])))
    if body.get("expires_at") and body["event"] in ("request.created", "request.decided"):
        out.append(("Expires", str(body["expires_at"]).replace("T", " ")[:19] + " UTC"))
    return out


def _mrkdwn(text: str) -> str:
    """Slack's three escapes, and no way out of a code block."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("```", "`\u200b``")


def slack_message(body: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """An incoming-webhook message: a header, the facts as fields, the text in a code block, the hint."""
    now = now or datetime.now(UTC)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": summary(body)[:150]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{_mrkdwn(v)}"}
                                       for k, v in _fields(body, now)]},
    ]
    if body.get("text"):
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": f"*What*\n```{_mrkdwn(body['text'][:MAX_TEXT])}```"}})
    reason = body.get("status_reason") or body.get("reason")
    if reason:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _mrkdwn(str(reason)[:MAX_TEXT])}]})
    if body.get("hint"):
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"`{_mrkdwn(body['hint'])}`"}]})
    return {"text": summary(body), "blocks": blocks}


def email_message(body: dict[str, Any], sender: str, to: list[str], now: datetime | None = None) -> EmailMessage:
    """A plain-text mail: the summary as subject, the facts, the text, the hint."""
    now = now or datetime.now(UTC)
    msg = EmailMessage()
    msg["Subject"] = "[bastion] " + summary(body)
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(now.timestamp(), usegmt=True)
    msg["Message-ID"] = make_msgid("bastion", sender.rpartition("@")[2] or None)
    msg["X-Bastion-Event"] = str(body["event"])
    msg["X-Bastion-Delivery"] = str(body["id"])
    lines = [summary(body), ""] + [f"{k + ':':<11}{v}" for k, v in _fields(body, now)]
    if body.get("text"):
        lines += ["", "What:", *("    " + ln for ln in str(body["text"]).splitlines() or [""])]
    reason = body.get("status_reason") or body.get("reason")
    if reason:
        lines += ["", f"Why: {reason}"]
    if body.get("hint"):
        lines += ["", f"To review: {body['hint']}"]
    msg.set_content("\n".join(lines) + "\n")
    return msg
