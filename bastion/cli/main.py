"""The ``bastion`` command: serve, demo, check-config, sessions, replay, audit, keys, policy, ca."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.cli.audit import register as register_audit
from bastion.cli.ca import register as register_ca
from bastion.cli.common import config_path, load_for_command, open_store, parse_offset, setup_logging
from bastion.cli.notify import register as register_notify
from bastion.config import ConfigError, load_config
from bastion.store.rows import cursor_of, parse_cursor

if TYPE_CHECKING:
    from bastion.store.rows import SessionRecord


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.file)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"{cfg.path}: OK ({len(cfg.resources)} resources, {len(cfg.users)} local users, {len(cfg.roles)} roles)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = load_for_command(args, check_files=True)
    if cfg is None:
        return 1
    setup_logging(args.verbose, cfg.log_dir)
    if cfg.processes == "per-connection":
        from bastion.workers.supervisor import serve as serve_forked

        return serve_forked(cfg)
    from bastion.daemon import serve

    asyncio.run(serve(cfg))
    return 0


def cmd_sessions_list(args: argparse.Namespace) -> int:
    got = open_store(args)
    if got is None:
        return 1
    _, store = got
    before = None
    if args.before:
        try:
            before = parse_cursor(args.before)
        except ValueError:
            print(f"bastion sessions list: --before {args.before!r} is not a cursor this command printed",
                  file=sys.stderr)
            return 2
    rows = store.sessions(limit=args.limit + 1, before=before)  # one more: is there a next page?
    more, rows = len(rows) > args.limit, rows[:args.limit]
    if more:  # on stderr: stdout stays the list (or the JSON) alone
        print(f"more: bastion sessions list --before '{cursor_of(rows[-1])}'", file=sys.stderr)
    if args.json:
        json.dump([r.as_dict() for r in rows], sys.stdout, indent=2)
        print()
        return 0
    if not rows:
        print("no sessions")
        return 0
    fmt = "{:<27} {:<12} {:<16} {:<20} {:>9} {:<22} {:<16} {}"
    print(fmt.format("ID", "USER", "RESOURCE", "START (UTC)", "DURATION", "ENDED", "NODE", "RECORDING"))
    for r in rows:
        dur = f"{r.duration:.1f}s" if r.duration is not None else "-"
        ended = r.outcome + (f" ({r.exit_status})" if r.exit_status is not None else "")
        print(fmt.format(r.id, r.user[:12], r.resource[:16], r.started_at.isoformat()[:19].replace("T", " "),
                         dur, ended[:22], (r.node or "-")[:16], r.recording or "-"))
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from bastion.store.identities import Identities

    got = open_store(args)
    if got is None:
        return 1
    _, store = got
    rows = Identities(store).list(user=args.user, include_inactive=args.all)
    if args.json:
        json.dump([r.as_dict() for r in rows], sys.stdout, indent=2)
        print()
        return 0
    if not rows:
        print("no key bindings" + ("" if args.all else " (active; --all shows expired and revoked ones)"))
        return 0
    fmt = "{:>5} {:<16} {:<52} {:<20} {:<20} {}"
    print(fmt.format("ID", "USER", "FINGERPRINT", "EXPIRES (UTC)", "LAST USED (UTC)", "STATE"))
    for r in rows:
        print(fmt.format(r.id, r.user[:16], r.fingerprint[:52], r.expires_at.isoformat()[:19] if r.expires_at
                         else "never", r.last_used_at.isoformat()[:19] if r.last_used_at else "-", r.state))
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    import getpass

    from bastion.store.db import Store
    from bastion.store.identities import Identities

    cfg = load_for_command(args)
    if cfg is None:
        return 1
    if args.id is None and args.user is None and args.fingerprint is None:
        print("bastion keys revoke: give a binding ID, --user NAME or --fingerprint SHA256:...", file=sys.stderr)
        return 2
    store = Store(cfg.database_url)
    store.migrate()
    by = f"admin:{getpass.getuser()}"
    ids = Identities(store).revoke(by=by, binding=args.id, user=args.user, fingerprint=args.fingerprint)
    for i in ids:
        store.audit(by, "key.revoke", "ok", key_binding=i, user=args.user, fingerprint=args.fingerprint)
    print(f"revoked {len(ids)} key binding(s)" + (f": {', '.join(map(str, ids))}" if ids else ""))
    return 0 if ids else 1


def _find_recording(ref: str, args: argparse.Namespace) -> tuple[Path, SessionRecord | None]:
    """A .cast path as given, or the recording of the session with that id in the configured store (with the
    session's row)."""
    p = Path(ref)
    if p.exists():
        return p, None
    from bastion.store.db import Store
    from recorder.storage import StorageError

    cfg = load_config(config_path(args), check_files=False)
    store = Store(cfg.database_url)
    store.migrate()
    row = store.session(ref)
    if row and row.recording:
        try:
            return cfg.recording_storage().local(row.recording, row.sha256), row
        except (OSError, StorageError) as e:
            raise SystemExit(f"bastion replay: session {ref}: {e}") from None
    raise SystemExit(f"bastion replay: {ref}: no such file, nor a session id in {cfg.path}")


def cmd_replay(args: argparse.Namespace) -> int:
    from recorder.asciicast import CastError
    from recorder.player import play

    try:
        path, row = _find_recording(args.ref, args)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    from bastion.cli.review import bookmarks_of, keep_bookmarks

    marks = bookmarks_of(row, args)
    if args.html:
        return _export_html(path, row, Path(args.html), marks)
    try:
        if args.to is not None and args.start is not None and args.to < args.start:
            print("bastion replay: --to is before --from", file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory(prefix="bastion-replay-") as tmp:
            out = str(Path(tmp) / "new-bookmarks.jsonl") if row is not None else None
            play(path, speed=args.speed, idle_limit=args.idle_limit, stream=args.stream, start=args.start,
                 end=args.to, extra_markers=marks, bookmark_out=out)
            if out is not None and row is not None:
                keep_bookmarks(row, args, Path(out))
    except CastError as e:
        print(f"bastion replay: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _export_html(path: Path, session: SessionRecord | None, out: Path,
                 marks: list[tuple[float, str]] | None = None) -> int:
    """``replay --html``: the standalone page, with the session's facts when the recording is a known session's."""
    from recorder.asciicast import CastError
    from recorder.html import PlayerAssetsMissing, export_html

    info: dict[str, str] = {"recording": str(path)}
    title = None
    if session is not None:  # a session id: say whose session it was
        row = session.as_dict()  # the facts as the JSON output gives them (times in ISO 8601)
        title = f"Session {row.get('id')}: {row.get('user')} on {row.get('resource')}"
        for key in ("id", "user", "resource", "kind", "mode", "command", "client_addr", "started_at", "ended_at",
                    "outcome", "exit_status", "sha256"):
            if row.get(key) not in (None, ""):
                info[key.replace("_", " ")] = str(row[key])
    try:
        export_html(path, out, title=title, info=info, extra_markers=marks or ())
    except (CastError, PlayerAssetsMissing, OSError) as e:
        print(f"bastion replay --html: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out} (standalone: open it in any browser, no network needed)")
    return 0


def cmd_policy_test(args: argparse.Namespace) -> int:
    from policies.engine import evaluate, evaluate_sql

    cfg = load_for_command(args)
    if cfg is None:
        return 1
    res = cfg.resources.get(args.resource)
    if res is None:
        print(f"bastion policy test: no resource {args.resource!r} in {cfg.path}", file=sys.stderr)
        return 2
    user = cfg.users.get(args.user)
    groups = list(args.group or []) or (list(user.groups) if user else [])
    if user is None and not args.group:
        print(f"bastion policy test: no local user {args.user!r}; give --group for other users", file=sys.stderr)
        return 2
    words = args.command[1:] if args.command[:1] == ["--"] else args.command
    command = " ".join(words).strip()
    if res.policy is None:
        print(f"{args.resource}: no policy attached; every command is allowed", file=sys.stderr)
        return 0
    if args.sql:
        d = evaluate_sql(cfg.policies[res.policy], command, groups=groups, resource=args.resource)
    else:
        d = evaluate(cfg.policies[res.policy], command, groups=groups, resource=args.resource,
                     interactive=args.interactive, terminal=args.terminal)
    if args.json:
        print(json.dumps({"resource": args.resource, "user": args.user, "policy": res.policy, **d.as_dict()},
                         indent=2))
    else:
        print(f"{d.action.label.upper()}  {d.summary()}")
        for line in d.explanation:
            print(f"  - {line}")
        if d.action.label == "require_approval":
            print(f"  approvals needed: {max(1, d.approvals)} from {', '.join(d.approver_roles) or 'any reviewer'}")
        if args.explain and not args.sql:
            _explain_shell(command, interactive=args.interactive, terminal=args.terminal)
    return 0


def _explain_shell(command: str, *, interactive: bool, terminal: bool) -> None:
    """How the engine read a shell line: each program it runs, the wrappers and options consumed on the way,
    and what it could not see through."""
    from policies.shell import ShellParseError, parse_line

    try:
        line = parse_line(command, interactive=interactive, terminal=terminal)
    except ShellParseError as e:
        print(f"unwrapped: cannot be parsed: {e}")
        return
    print(f"unwrapped ({'typed at a prompt' if interactive else 'exec form'}, "
          f"{'with' if terminal else 'without'} a terminal):")
    for c in line.commands:
        via = f" via {' > '.join(c.wrappers)}" if c.wrappers else ""
        print(f"  program {c.program}{via}: args {list(c.args)}"
              + (" (+ arguments the bastion cannot see)" if c.args_open else ""))
        for step in c.steps:
            print(f"    - {step}")
        for why in c.opaque:
            print(f"    ! opaque: {why}")
    for why in dict.fromkeys(line.opaque):
        if not any(why in c.opaque for c in line.commands):
            print(f"  ! opaque: {why}")


def cmd_demo(args: argparse.Namespace) -> int:
    from bastion.demo.run import run_demo

    return run_demo(Path(args.state_dir), args.port, setup_logging=partial(setup_logging, args.verbose))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bastion", description="SSH bastion with brokered, recorded sessions")
    p.add_argument("--config", help="config file (YAML)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run the daemon")
    s.add_argument("--config", dest="config_file")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("check-config", help="validate a config file")
    s.add_argument("file")
    s.set_defaults(func=cmd_check_config)

    s = sub.add_parser("demo", help="run a self-contained demo (SQLite, local recordings, a demo SSH target)")
    s.add_argument("--port", type=int, default=2222)
    s.add_argument("--state-dir", default=".bastion-demo")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("sessions", help="brokered sessions")
    ss = s.add_subparsers(dest="sessions_cmd", required=True)
    sl = ss.add_parser("list", help="list sessions, newest first")
    sl.add_argument("--config", dest="config_file")
    sl.add_argument("--json", action="store_true")
    sl.add_argument("--limit", type=int, default=200, help="sessions per page (default 200)")
    sl.add_argument("--before", metavar="CURSOR", help="the page after the one that printed this cursor")
    sl.set_defaults(func=cmd_sessions_list)

    _add_keys(sub)
    _add_policy(sub)
    _add_replay(sub)
    register_audit(sub)
    register_ca(sub)
    register_notify(sub)
    return p


def _add_keys(sub: Any) -> None:
    s = sub.add_parser("keys", help="SSH keys bound to OIDC sign-ins")
    ks = s.add_subparsers(dest="keys_cmd", required=True)
    kl = ks.add_parser("list", help="list key bindings (active unless --all)")
    kl.add_argument("--user", help="only this user's keys")
    kl.add_argument("--all", action="store_true", help="include expired and revoked bindings")
    kl.add_argument("--json", action="store_true")
    kl.add_argument("--config", dest="config_file")
    kl.set_defaults(func=cmd_keys_list)
    kr = ks.add_parser("revoke", help="revoke bindings: the key needs a new sign-in")
    kr.add_argument("id", nargs="?", type=int, help="binding ID (from keys list)")
    kr.add_argument("--user", help="every key of this user")
    kr.add_argument("--fingerprint", help="a key by fingerprint (SHA256:...)")
    kr.add_argument("--config", dest="config_file")
    kr.set_defaults(func=cmd_keys_revoke)


def _add_policy(sub: Any) -> None:
    s = sub.add_parser("policy", help="policies")
    ps = s.add_subparsers(dest="policy_cmd", required=True)
    pt = ps.add_parser("test", help="show the decision for a command: policy test --resource R --user U -- CMD")
    pt.add_argument("--config", dest="config_file")
    pt.add_argument("--resource", required=True)
    pt.add_argument("--user", required=True)
    pt.add_argument("--group", action="append", help="groups of a user not in the config (repeatable)")
    pt.add_argument("--json", action="store_true")
    pt.add_argument("--sql", action="store_true", help="judge the text as SQL (as a postgres resource would)")
    pt.add_argument("--explain", action="store_true",
                    help="show how the line was unwrapped: each program, the wrappers and options consumed, and "
                         "what could not be seen through")
    pt.add_argument("--terminal", action="store_true",
                    help="judge as the exec form with a terminal (ssh -t): pagers and editors read keys")
    pt.add_argument("--interactive", action="store_true",
                    help="judge as a line typed at an interactive shell prompt (history expansion applies)")
    pt.add_argument("command", nargs=argparse.REMAINDER)
    pt.set_defaults(func=cmd_policy_test)
    from bastion.cli.backtest import register as register_backtest  # policy backtest (issue 23)

    register_backtest(ps)


def _add_replay(sub: Any) -> None:
    s = sub.add_parser("replay", help="play a recording (session id or .cast file) in this terminal")
    s.add_argument("ref", metavar="ID|FILE")
    s.add_argument("--config", dest="config_file")
    s.add_argument("--speed", type=float, default=1.0)
    s.add_argument("--idle-limit", type=float, default=None, help="cap pauses to this many seconds")
    s.add_argument("--from", dest="start", type=parse_offset, metavar="T",
                   help="start at T (seconds or [h:]m:ss): the screen as it was then")
    s.add_argument("--to", type=parse_offset, metavar="T", help="stop after T")
    s.add_argument("--html", metavar="FILE", help="write a standalone offline HTML player page instead of playing")
    s.add_argument("--stream", choices=("o", "i"), default="o", help="o: what the terminal showed (default); "
                   "i: what was typed (echoed input only)")
    s.set_defaults(func=cmd_replay)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `bastion ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
