"""``bastion policy backtest --against NEW.yaml``: what the new config's policies would have decided about what was
judged in a window, against the running config's store and recordings (see :mod:`bastion.audit.backtest`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from bastion.cli.common import load_for_command, when_arg
from bastion.config import ConfigError, load_config

EXIT_CHANGES, EXIT_UNJUDGED = 1, 3


def at(t: float | None) -> str:
    """An offset as ``bastion replay --from`` reads it ([h:]m:ss, rounded down: the screen just before)."""
    if t is None:
        return "-"
    s = int(t)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def replay_hint(session: str | None, t: float | None) -> str | None:
    return f"bastion replay {session} --from {at(t)}" if session is not None and t is not None else None


def by_rule(changes: list[Any]) -> list[tuple[tuple[str, str, str, str], int]]:
    """Counts per kind of change and rule: (was, now, rule then, rule now), most frequent first."""
    count = Counter((c.was.action, c.now.action.label, c.was.rule or "(default)", c.now.rule or "(default)")
                    for c in changes)
    return sorted(count.items(), key=lambda kv: (-kv[1], kv[0]))


def as_json(result: Any, against: str, since: datetime | None) -> dict[str, Any]:
    """The report as one JSON document (``--json``): stable keys, times as seconds and as replay offsets."""
    return {
        "against": against, "since": since.isoformat() if since else None, "judged": result.judged,
        "seconds": round(result.seconds, 4), "per_second": round(result.rate),
        "by_rule": [{"from": k[0], "to": k[1], "rule_then": k[2], "rule_now": k[3], "count": n}
                    for k, n in by_rule(result.changes)],
        "changes": [{"session": c.was.session, "t": c.was.t, "at": at(c.was.t), "user": c.was.user,
                     "resource": c.was.resource, "kind": c.was.kind, "text": c.was.text, "from": c.was.action,
                     "rule_then": c.was.rule, "to": c.now.action.label, "rule_now": c.now.rule,
                     "reason_now": c.now.reason, "inferred": c.was.inferred,
                     "replay": replay_hint(c.was.session, c.was.t)} for c in result.changes],
        "not_judged": [{"session": j.session, "t": j.t, "at": at(j.t), "user": j.user, "resource": j.resource,
                        "kind": j.kind, "text": j.text, "action": j.action, "rule": j.rule, "why": j.problem}
                       for j in result.unjudged],
        "groups": result.groups,
    }


def print_text(result: Any, against: str) -> None:
    """The report for people: the counts per rule, each change with where to replay it, what was not judged."""
    print(f"{result.judged} decisions judged again under {against} ({result.rate:,.0f}/s); "
          f"{len(result.changes)} would change, {len(result.unjudged)} could not be judged again")
    if result.changes:
        print(f"\n{'CHANGE':<34} {'RULE THEN':<24} {'RULE NOW':<24} {'COUNT':>5}")
        for (was, now, then, rule), n in by_rule(result.changes):
            print(f"{was + ' -> ' + now:<34} {then[:24]:<24} {rule[:24]:<24} {n:>5}")
        fmt = "{:<27} {:>8} {:<12} {:<16} {:<9} {:<34} {}"
        print("\n" + fmt.format("SESSION", "AT", "USER", "RESOURCE", "KIND", "CHANGE", "TEXT"))
        for c in result.changes:
            change = f"{c.was.action} -> {c.now.action.label}" + (f" ({c.now.rule})" if c.now.rule else "")
            print(fmt.format(c.was.session or "(not opened)", at(c.was.t), c.was.user[:12], c.was.resource[:16],
                             c.was.kind, change[:34], c.was.text[:200]))
    if result.unjudged:
        fmt = "{:<27} {:>8} {:<12} {:<16} {:<9} {}"
        print("\nNOT JUDGED AGAIN\n" + fmt.format("SESSION", "AT", "USER", "RESOURCE", "KIND", "WHY"))
        for j in result.unjudged:
            print(fmt.format(j.session or "(not opened)", at(j.t), j.user[:12], j.resource[:16], j.kind,
                             f"{j.problem}: {j.text[:120]}" if j.text else j.problem))
    for user, why in sorted(result.groups.items()):
        print(f"groups of {user}: {why}", file=sys.stderr)
    if result.changes:
        print("\nreplay a change: bastion replay SESSION --from AT", file=sys.stderr)


def cmd_backtest(args: argparse.Namespace) -> int:
    from bastion.audit.backtest import run
    from bastion.store.db import Store

    running = load_for_command(args)
    if running is None:
        return 2
    try:
        new = load_config(args.against, check_files=False)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    since = args.since if args.since is not None else datetime.now(UTC) - timedelta(days=30)
    store = Store(running.database_url)  # read only: no migration, no writes
    result = run(store, running, new, since=since, user=args.user, resource=args.resource)
    if args.json:
        json.dump(as_json(result, args.against, since), sys.stdout, indent=2)
        print()
    else:
        print_text(result, args.against)
    return EXIT_CHANGES if result.changes else EXIT_UNJUDGED if result.unjudged else 0


def register(policy_sub: Any) -> None:
    """Add ``backtest`` under ``bastion policy``."""
    pb = policy_sub.add_parser(
        "backtest", help="judge what was judged in a window again under another config's policies; show what would "
        "change (exit 0: nothing, 1: something would change, 3: something could not be judged again)")
    pb.add_argument("--config", dest="config_file", help="the running config (its store and recordings)")
    pb.add_argument("--against", required=True, metavar="NEW.yaml", help="the config whose policies to try")
    pb.add_argument("--since", type=when_arg, metavar="AGE|DATE", help="window start: 30d (default), or a date")
    pb.add_argument("--resource", help="only this resource (a * glob)")
    pb.add_argument("--user", help="only this user (a * glob)")
    pb.add_argument("--json", action="store_true")
    pb.set_defaults(func=cmd_backtest)
