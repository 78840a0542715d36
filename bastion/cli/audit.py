"""``bastion audit ...``: search recordings, verify and sign the hash chains, (re)build indexes."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.audit.indexing import index_session
from bastion.cli.common import load_for_command, open_store, when_arg
from bastion.cli.review import register_review
from recorder.storage import StorageError, is_remote

if TYPE_CHECKING:
    pass


def _offset(t: float) -> str:
    """``[h:]m:ss.mmm``, rounded up to the millisecond: ``replay --from`` it includes the event that showed the hit
    (rounded down, or to the second, it would land before it: a bare prompt, the line before)."""
    ms = math.ceil(round(t * 1000, 3))
    s, ms = divmod(ms, 1000)
    clock = f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    return f"{clock}.{ms:03d}"


_NOUNS = {"recordings": ("recording", "recordings"), "audit": ("audit event", "audit events")}


def checked_summary(counts: dict[str, int]) -> str:
    """What ``audit verify`` checked, as words: ``5 recordings and 53 audit events``, ``1 recording and 1 audit
    event``."""
    parts = []
    for key, n in counts.items():
        one, many = _NOUNS.get(key, (key, key))
        parts.append(f"{n} {one if n == 1 else many}")
    if len(parts) < 2:
        return "".join(parts) or "nothing"
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def cmd_search(args: argparse.Namespace) -> int:
    from bastion.store.search import search

    got = open_store(args)
    if got is None:
        return 1
    _, store = got
    try:
        kind = {"screen": "screen", "commands": "marker", "stdin": "stdin"}.get(args.only or "")
        hits = search(store, args.text, user=args.user, resource=args.resource, since=args.since, kind=kind,
                      limit=args.limit)
    except ValueError as e:
        print(f"bastion audit search: {e}", file=sys.stderr)
        return 2
    if args.json:
        json.dump([h.as_dict() for h in hits], sys.stdout, indent=2)
        print()
        return 0 if hits else 1
    if not hits:
        print("no matches", file=sys.stderr)
        return 1
    fmt = "{:<27} {:<12} {:<16} {:>9}  {:<7} {}"
    print(fmt.format("SESSION", "USER", "RESOURCE", "AT", "WHERE", "TEXT"))
    for h in hits:
        where = h.kind if h.kind in ("screen", "stdin") else "judged"
        print(fmt.format(h.session, h.user[:12], h.resource[:16], _offset(h.t), where, h.text.strip()[:200]))
    print("\nreplay from a hit: bastion replay SESSION --from AT", file=sys.stderr)
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    got = open_store(args)
    if got is None:
        return 1
    cfg, store = got
    try:
        n = index_session(store, args.session, cfg.recording_storage())
    except (LookupError, OSError, StorageError) as e:
        print(f"bastion audit index: {e}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"session {args.session}: {n} lines indexed, keyframes built")
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    from bastion.store.search import reindex
    from recorder.seekindex import build, save

    got = open_store(args)
    if got is None:
        return 1
    cfg, store = got
    storage = cfg.recording_storage()
    done, problems = reindex(store, storage, args.session)
    for sid in done:
        row = store.session(sid)
        ref = row.recording if row else None
        if ref and not is_remote(ref) and Path(ref).is_file():
            save(build(ref), ref)
    for p in problems:
        print(f"bastion audit reindex: {p}", file=sys.stderr)
    print(f"reindexed {len(done)} recording(s), {sum(done.values())} lines")
    return 0 if not problems else 1


def cmd_verify(args: argparse.Namespace) -> int:
    from bastion.store.verify import load_public_key, verify

    got = open_store(args)
    if got is None:
        return 1
    cfg, store = got
    pub = None
    key_file = args.public_key or (str(cfg.signing_key) if cfg.signing_key and args.use_config_key else None)
    if key_file:
        try:
            pub = load_public_key(Path(key_file))
        except (OSError, ValueError) as e:
            print(f"bastion audit verify: {e}", file=sys.stderr)
            return 2
    rep = verify(store, public_key=pub, check_files=not args.no_files, storage=cfg.recording_storage())
    if args.json:
        json.dump(rep.as_dict(), sys.stdout, indent=2)
        print()
        return 0 if rep.ok else 1
    for p in rep.problems:
        print(p)
    for n in rep.notes:
        print(f"note: {n}")
    summary = checked_summary(rep.counts)
    bad = len(rep.problems)
    print(f"OK: checked {summary}" if rep.ok else
          f"FAILED ({bad} {'problem' if bad == 1 else 'problems'}): checked {summary}")
    return 0 if rep.ok else 1


def cmd_sign(args: argparse.Namespace) -> int:
    from bastion.store.verify import load_private_key, sign_heads

    got = open_store(args)
    if got is None:
        return 1
    cfg, store = got
    key_file = args.key or (str(cfg.signing_key) if cfg.signing_key else None)
    if not key_file:
        print("bastion audit sign: no key (set audit.signing_key_file in the config or give --key)", file=sys.stderr)
        return 2
    try:
        key = load_private_key(Path(key_file))
    except (OSError, ValueError) as e:
        print(f"bastion audit sign: {e}", file=sys.stderr)
        return 2
    for s in sign_heads(store, key):
        print(f"signed {s['chain']} head #{s['seq']} {s['head'][:16]}... with {s['key_id']}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bastion.audit.report import build_report, report_csv

    got = open_store(args)
    if got is None:
        return 1
    _, store = got
    until = args.to or datetime.now(UTC)
    since = args.start or until - timedelta(days=30)
    if since >= until:
        print("bastion audit report: --from must be before --to", file=sys.stderr)
        return 2
    rep = build_report(store, since, until)
    text = report_csv(rep) if args.format == "csv" else json.dumps(rep, indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        s = rep["summary"]
        print(f"wrote {args.out}: {s['sessions']} sessions, {s['blocked']} blocked, {s['approvals']} approvals "
              f"({s['approved']} approved), {s['terminations']} terminations", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from bastion.audit.report import prune

    got = open_store(args)
    if got is None:
        return 1
    cfg, store = got
    days = args.days or cfg.recordings.retention_days
    if not days:
        print("bastion audit prune: no retention (set recordings.retention_days or give --days)", file=sys.stderr)
        return 2
    done = prune(store, days, cfg.recording_storage(), dry_run=args.dry_run)
    for d in done:
        print(f"{'would prune' if args.dry_run else 'pruned'} {d['session']} {d['path']}")
    print(f"{len(done)} recording(s) {'would be ' if args.dry_run else ''}pruned (older than {days:g} days)")
    return 0


def cmd_archive(args: argparse.Namespace) -> int:
    """An archived file's bytes, by the SHA-256 a transfer log (``audit search``, F5) names; checked again on the
    way out: bytes that no longer match their hash are refused, not handed over."""
    from recorder.archive import archive_root, archived_path, file_sha256

    cfg = load_for_command(args, check_files=False)
    if cfg is None:
        return 1
    try:
        path = archived_path(archive_root(cfg.recordings_dir), args.sha256.lower())
        digest = file_sha256(path)
    except ValueError as e:
        print(f"bastion: {e}", file=sys.stderr)
        return 2
    except OSError:
        print(f"bastion: no archived file with SHA-256 {args.sha256} (archiving off, pruned, or never sent)",
              file=sys.stderr)
        return 1
    if digest != args.sha256.lower():
        print(f"bastion: the archived file {path} was modified (it hashes to {digest}); refused", file=sys.stderr)
        return 1
    data = path.read_bytes()
    if args.out:
        Path(args.out).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
    return 0


def register(sub: Any) -> None:
    """Add the ``audit`` command group to the top-level parser's subcommands."""
    a = sub.add_parser("audit", help="search recordings, verify and sign the audit trail")
    asub = a.add_subparsers(dest="audit_cmd", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        p = asub.add_parser(name, help=help_)
        p.add_argument("--config", dest="config_file")
        p.set_defaults(func=func)
        return p

    p = add("search", cmd_search, "find text that recordings showed, or commands that were judged in them")
    p.add_argument("text")
    p.add_argument("--user")
    p.add_argument("--resource")
    p.add_argument("--since", type=when_arg, help="ISO date/time or an age (7d, 12h)")
    p.add_argument("--only", choices=("screen", "commands", "stdin"),
                   help="only screen text, only judged commands, or only the input of sessions without a terminal")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")

    p = add("verify", cmd_verify, "check the hash chains, the recording files and the signed heads")
    p.add_argument("--public-key", help="ed25519 public key (OpenSSH .pub or PEM) the heads were signed with")
    p.add_argument("--use-config-key", action="store_true",
                   help="check signatures with the public half of audit.signing_key_file")
    p.add_argument("--no-files", action="store_true", help="check the chains only, not the recording files")
    p.add_argument("--json", action="store_true")

    p = add("sign", cmd_sign, "sign the current chain heads (ed25519)")
    p.add_argument("--key", help="private key file (default: audit.signing_key_file)")

    p = add("report", cmd_report, "sessions, blocked commands, approvals and terminations of a period")
    p.add_argument("--from", dest="start", type=when_arg, help="start (ISO date/time or an age; default: 30d)")
    p.add_argument("--to", type=when_arg, help="end, exclusive (default: now)")
    p.add_argument("--format", choices=("json", "csv"), default="json")
    p.add_argument("--out", help="write to this file instead of standard output")

    p = add("prune", cmd_prune, "apply the retention: remove old recordings, keep them named in the chain")
    p.add_argument("--days", type=float, help="override recordings.retention_days")
    p.add_argument("--dry-run", action="store_true")

    p = add("archive", cmd_archive, "the archived contents of a transferred file, by its SHA-256")
    p.add_argument("sha256")
    p.add_argument("--out", "-o", help="write to this file instead of standard output")

    p = add("index", cmd_index, "build the search index and seek keyframes of one recording")
    p.add_argument("session")
    p.add_argument("--quiet", action="store_true")

    p = add("reindex", cmd_reindex, "rebuild the search index and keyframes (all recordings, or one)")
    p.add_argument("--session")
    register_review(add)

    from bastion.cli.export import register as register_export  # audit events out (docs/audit-export.md)

    register_export(add)
