"""``bastion audit timeline | bookmark | review | notes``: an auditor's questions answered from the command line
(the same store and rules as the F5 screen: bastion.store.reviews, bastion.audit.timeline)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bastion.cli.common import config_path, open_store, parse_offset, when_arg
from bastion.config import load_config
from bastion.store.rows import SessionRecord

Add = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def _by(args: argparse.Namespace) -> str:
    return args.by or f"admin:{getpass.getuser()}"


def cmd_timeline(args: argparse.Namespace) -> int:
    from bastion.audit.timeline import render, timeline

    got = open_store(args)
    if got is None:
        return 1
    _, store = got
    entries = timeline(store, user=args.user, grant=args.grant, resource=args.resource, since=args.since)
    if args.json:
        print(json.dumps([e.as_dict() for e in entries], indent=2))
    else:
        sys.stdout.write(render(entries) or "nothing in this window\n")
    return 0


def cmd_bookmark(args: argparse.Namespace) -> int:
    from bastion.store.reviews import ReviewError, ReviewStore

    got = open_store(args)
    if got is None:
        return 1
    _, store = got
    try:
        b = ReviewStore(store).bookmark(args.session, _by(args), args.at, args.note)
    except ReviewError as e:
        print(f"bastion audit bookmark: {e}", file=sys.stderr)
        return 2
    store.audit(_by(args), "recording.bookmark", "ok", session_id=args.session, t=b.t, note=b.note[:500])
    print(f"bookmark {b.id} at {args.at:g}s of {args.session}")
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    from bastion.store.reviews import ReviewError, ReviewStore

    got = open_store(args)
    if got is None:
        return 1
    _, store = got
    try:
        r = ReviewStore(store).review(args.session, _by(args), args.verdict, args.comment or "")
    except ReviewError as e:
        print(f"bastion audit review: {e}", file=sys.stderr)
        return 2
    store.audit(_by(args), "recording.review", r.verdict, session_id=args.session, comment=r.comment[:500])
    print(f"{args.session}: {r.verdict}")
    return 0


def cmd_notes(args: argparse.Namespace) -> int:
    from bastion.store.reviews import ReviewStore

    got = open_store(args)
    if got is None:
        return 1
    _, store = got
    rs = ReviewStore(store)
    out: dict[str, Any] = {"session": args.session, "risk": rs.risks([args.session])[args.session],
                           "reviews": [r.as_dict() for r in rs.reviews(args.session)],
                           "bookmarks": [b.as_dict() for b in rs.bookmarks(args.session)]}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{args.session}: risk {', '.join(out['risk']) or 'none'}")
    for r in out["reviews"]:
        print(f"  {r['at'][:19]}  {r['verdict']:<9} by {r['reviewer']}: {r['comment']}")
    for b in out["bookmarks"]:
        print(f"  {b['t']:>8.1f}s  bookmark by {b['author']}: {b['note']}")
    return 0


def keep_bookmarks(row: SessionRecord, args: argparse.Namespace, made: Path) -> None:
    """What ``b`` marked in this replay, kept as this admin's bookmarks (and audit events)."""
    from bastion.sessions.player import new_bookmarks
    from bastion.store.db import Store
    from bastion.store.reviews import ReviewStore

    marks = new_bookmarks(made)
    if not marks:
        return
    store, by = Store(load_config(config_path(args), check_files=False).database_url), f"admin:{getpass.getuser()}"
    for t, note in marks:
        b = ReviewStore(store).bookmark(row.id, by, t, note)
        store.audit(by, "recording.bookmark", "ok", resource=row.resource, session_id=row.id, t=b.t, note=b.note)
    print(f"kept {len(marks)} bookmark(s) of {row.id}", file=sys.stderr)


def bookmarks_of(row: SessionRecord | None, args: argparse.Namespace) -> list[tuple[float, str]]:
    """The auditors' bookmarks of a known session, as markers (kept beside the recording, shown among its own)."""
    if row is None:
        return []
    from bastion.store.db import Store
    from bastion.store.reviews import ReviewStore

    store = Store(load_config(config_path(args), check_files=False).database_url)
    return [(b.t, f"bookmark by {b.author}: {b.note}") for b in ReviewStore(store).bookmarks(row.id)]


def register_review(add: Add) -> None:
    """Add the auditor's workflow commands to ``bastion audit``."""
    p = add("timeline", cmd_timeline, "one ordered account of a user, a grant or a resource, with replay links")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user")
    who.add_argument("--grant", type=int, help="an access request's number: everything done under that grant")
    who.add_argument("--resource")
    p.add_argument("--since", type=when_arg, help="ISO date/time or an age (7d, 12h)")
    p.add_argument("--json", action="store_true")

    p = add("bookmark", cmd_bookmark, "mark a moment of a recording with a note (kept beside it, not in it)")
    p.add_argument("session")
    p.add_argument("--at", type=parse_offset, required=True, metavar="T", help="seconds or [h:]m:ss")
    p.add_argument("--note", required=True)
    p.add_argument("--by", help="who (default: admin:LOGIN)")

    p = add("review", cmd_review, "a verdict on a session: ok, follow-up or incident (with a comment)")
    p.add_argument("session")
    p.add_argument("--verdict", choices=("ok", "follow-up", "incident"), required=True)
    p.add_argument("--comment", help="why (required unless ok)")
    p.add_argument("--by", help="who (default: admin:LOGIN)")

    p = add("notes", cmd_notes, "a session's risk, verdicts and bookmarks")
    p.add_argument("session")
    p.add_argument("--json", action="store_true")
