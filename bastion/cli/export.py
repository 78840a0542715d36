"""``bastion audit export``: replay the audit chain (from a time or a position) into the configured sinks, a file
or standard output; ``--status``: how far each sink's live export got (docs/audit-export.md)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from bastion.cli.common import open_store, when_arg


def _status(cfg: Any, store: Any, as_json: bool) -> int:
    from bastion.config.export import kind_of
    from bastion.export.cursor import status

    models = {m.name: m for m in cfg.audit.export.sinks()}
    rows = status(store, list(models))
    if as_json:
        json.dump([r.as_dict() | {"kind": kind_of(models[r.sink]) if r.sink in models else None}
                   for r in rows], sys.stdout, indent=2)
        print()
        return 0
    if not rows:
        print("no audit export sinks (audit.export: in the config)")
        return 0
    fmt = "{:<20} {:<8} {:>8} {:>7} {:>9}  {:<20} {:<20} {}"
    print(fmt.format("SINK", "KIND", "SEQ", "BEHIND", "EXPORTED", "HOLDER", "LAST SENT (UTC)", "LAST ERROR"))
    for r in rows:
        kind = kind_of(models[r.sink]) if r.sink in models else "(gone)"
        sent = r.sent_at.isoformat()[:19].replace("T", " ") if r.sent_at else "-"
        print(fmt.format(r.sink[:20], kind, r.seq, r.behind, r.exported, (r.holder or "-")[:20], sent,
                         r.last_error or "-"))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from bastion.export.replay import pages, to_file
    from bastion.export.sinks import DeliveryError, Sink, build

    got = open_store(args)
    if got is None:
        return 1
    cfg, store = got
    if args.status:
        return _status(cfg, store, args.json)
    if args.since is None and args.from_seq is None:
        print("bastion audit export: give --since WHEN or --from-seq N (--from-seq 1: the whole chain)",
              file=sys.stderr)
        return 2
    x = cfg.audit.export
    targets: list[tuple[str, Sink]] = []
    if args.to_file:
        targets.append((args.to_file, to_file(args.to_file)))
    for name in args.sink or ([] if args.to_file else [m.name for m in x.sinks()]):
        model = x.sink(name)
        if model is None:
            print(f"bastion audit export: no sink {name!r} (sinks: {', '.join(m.name for m in x.sinks()) or 'none'})",
                  file=sys.stderr)
            return 2
        targets.append((name, build(cfg, model, x.delivery.timeout)))
    if not targets:
        print("bastion audit export: no sinks configured (audit.export:); give --to-file PATH or - for stdout",
              file=sys.stderr)
        return 2
    n = 0
    try:
        for page in pages(store, since=args.since, from_seq=args.from_seq, until=args.until):
            for name, sink in targets:
                try:
                    sink.send(page)
                except DeliveryError as e:
                    print(f"bastion audit export: {name}: not sent from #{page[0]['seq']}: {e}", file=sys.stderr)
                    return 1
            n += len(page)
    finally:
        for _, sink in targets:
            sink.close()
    print(f"exported {n} event(s) to {', '.join(name for name, _ in targets)}", file=sys.stderr)
    return 0


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``export`` with ``add`` (the ``audit`` group's helper)."""
    p = add("export", cmd_export, "send audit events again (from a time or position) to the sinks, a file or stdout")
    p.add_argument("--since", type=when_arg, help="from this time (ISO date/time or an age: 7d, 12h)")
    p.add_argument("--from-seq", type=int, help="from this position of the audit chain (1: everything)")
    p.add_argument("--until", type=when_arg, help="up to this time, exclusive (default: now)")
    p.add_argument("--sink", action="append", help="only this configured sink (repeatable; default: all)")
    p.add_argument("--to-file", metavar="PATH", help="append JSON lines to PATH instead (- : standard output)")
    p.add_argument("--status", action="store_true", help="how far each sink's live export got, and its last error")
    p.add_argument("--json", action="store_true", help="with --status: as JSON")
