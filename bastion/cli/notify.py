"""``bastion notify status``: per target, what is pending, delivered and failed, and the last error; ``bastion
notify test TARGET``: send one made-up event to a target now and say what happened (a config check that reaches
the receiver)."""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from datetime import UTC, datetime
from typing import Any

from bastion.cli.common import open_store


def cmd_status(args: argparse.Namespace) -> int:
    from bastion.notify.outbox import status

    got = open_store(args)
    if got is None:
        return 1
    cfg, store = got
    configured = [t.name for t in cfg.notify.targets()]
    rows = status(store, configured)
    if args.json:
        json.dump([r.as_dict() | {"configured": r.target in configured} for r in rows], sys.stdout, indent=2)
        print()
        return 0
    if not rows:
        print("no notification targets (notify: in the config)")
        return 0
    fmt = "{:<20} {:>8} {:>10} {:>7}  {:<20} {}"
    print(fmt.format("TARGET", "PENDING", "DELIVERED", "FAILED", "OLDEST PENDING (UTC)", "LAST ERROR"))
    for r in rows:
        name = r.target + ("" if r.target in configured else " (gone)")
        oldest = r.oldest_pending.isoformat()[:19].replace("T", " ") if r.oldest_pending else "-"
        err = f"{r.last_error_at.isoformat()[:19].replace('T', ' ')} {r.last_error}" if r.last_error and \
            r.last_error_at else (r.last_error or "-")
        print(fmt.format(name[:20], r.pending, r.delivered, r.failed, oldest, err))
    return 0


def test_event(server: str, node: str) -> dict[str, Any]:
    """A request.created that names no real request (resource and rule ``(test)``), for ``notify test``."""
    from bastion.notify.events import hint

    t = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {"version": 1, "id": secrets.token_hex(32), "event": "request.created", "time": t, "node": node,
            "actor": "bastion", "user": "bastion", "resource": "(test)", "resource_kind": None, "session_id": None,
            "request_id": 0, "request_kind": "command", "text": "echo this is a test of bastion notify",
            "rule": "(test)", "reason": "bastion notify test", "status": "pending", "status_reason": "",
            "approvals": {"given": 0, "needed": 1}, "approver_roles": [], "created_at": t, "expires_at": t,
            "decisions": [], "hint": hint(server, "request.created", 0)}


def cmd_test(args: argparse.Namespace) -> int:
    from bastion.cli.common import load_for_command
    from bastion.notify.events import server_of
    from bastion.notify.send import DeliveryError, send

    cfg = load_for_command(args, check_files=False)
    if cfg is None:
        return 1
    target = cfg.notify.target(args.target)
    if target is None:
        names = ", ".join(t.name for t in cfg.notify.targets()) or "none configured"
        print(f"bastion notify test: no target {args.target!r} ({names})", file=sys.stderr)
        return 2
    try:
        asyncio.run(send(cfg, target, test_event(server_of(cfg), "(bastion notify test)")))
    except DeliveryError as e:
        print(f"{target.name}: not delivered: {e}", file=sys.stderr)
        return 1
    print(f"{target.name}: delivered")
    return 0


def register(sub: Any) -> None:
    s = sub.add_parser("notify", help="notifications: delivery status per target, a test event")
    ns = s.add_subparsers(dest="notify_cmd", required=True)
    st = ns.add_parser("status", help="pending, delivered and failed notifications per target, and the last error")
    st.add_argument("--config", dest="config_file")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    t = ns.add_parser("test", help="send a test event to TARGET now (not queued) and say whether it arrived")
    t.add_argument("target")
    t.add_argument("--config", dest="config_file")
    t.set_defaults(func=cmd_test)
