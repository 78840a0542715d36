"""``bastion policy backtest``: what a new config's policies would have decided about what was judged in a window.

Every decision the bastion took is on record: markers in the sessions' recordings (typed lines, the exec form's
command, SQL statements, Kubernetes requests, bastion-guard's execs) and, for exec-form commands refused or held
before a session opened, audit events in the store. Each is read back (:mod:`bastion.audit.backtest_markers`) and
given to the very functions the live path calls (``evaluate``, ``evaluate_sql``, ``evaluate_kube``,
``evaluate_exec``, ``judge_psql_line``) with the same flags, under the new config's policy for that resource. Reads
only: nothing is written to the store or next to the recordings. What cannot be judged again is reported with why.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy import select

from bastion.audit.backtest_markers import (
    Judged,
    Summary,
    guard_exec,
    kube_request,
    parse_summary,
    split_exec,
    split_reason,
    sql_runtime,
)
from bastion.config import Config
from bastion.store.approvals import ACCESS_RULE
from bastion.store.db import Store
from bastion.store.models import AuditEvent, Session, User
from bastion.store.rows import SessionRecord
from bastion.terminal.secretprompt import UNECHOED, WITHHELD
from policies.engine import Action, Decision, PolicySet, evaluate, evaluate_kube, evaluate_sql
from policies.execs import Exec, evaluate_exec
from policies.kube import KubeParseError, KubeRequest, parse_request
from policies.psql import judge_psql_line
from recorder.asciicast import CastError, read_header
from recorder.seekindex import load as load_index
from recorder.storage import StorageError
from recorder.transferlog import is_transfer_log

PAGE = 500


@dataclass(frozen=True)
class Change:
    """A past decision and the one the new config would take."""

    was: Judged
    now: Decision


@dataclass
class Backtest:
    """The outcome: every decision that would change, every one that could not be judged again, and the counts."""

    changes: list[Change] = field(default_factory=list)
    unjudged: list[Judged] = field(default_factory=list)
    judged: int = 0
    seconds: float = 0.0
    groups: dict[str, str] = field(default_factory=dict)  # user -> where their groups came from

    @property
    def rate(self) -> float:
        return self.judged / self.seconds if self.seconds > 0 else 0.0


def judge(cfg: Config, j: Judged) -> Decision:
    """``j`` judged under ``cfg`` exactly as the live path would judge it (see bastion/sessions/hooks.py and
    broker.py); KeyError when ``cfg`` has no such resource."""
    res = cfg.resources[j.resource]
    policy = cfg.policies.get(res.policy or "")
    gs = frozenset(j.groups)
    if j.kind == "psql":
        return judge_psql_line(j.text)
    if j.kind in ("shell", "exec-form"):
        if policy is None or (j.kind == "exec-form" and res.kind != "ssh"):
            return Decision(Action.ALLOW, None, "no policy attached to the resource", j.text)
        if j.kind == "shell":
            return evaluate(policy, j.text, groups=gs, resource=j.resource, interactive=True)
        return evaluate(policy, j.text, groups=gs, resource=j.resource, terminal=j.terminal,
                        guarded=getattr(res, "enforce", "filter") == "guard")
    policy = policy or PolicySet("(none)")  # the proxies judge with an empty set when none is attached
    if j.kind == "sql":
        return evaluate_sql(policy, j.text, groups=gs, resource=j.resource)
    if j.kind == "exec" and isinstance(j.subject, Exec):
        return evaluate_exec(policy, j.subject, groups=gs, resource=j.resource)
    if j.kind == "kube":
        req = j.subject
        if req is None:  # a method and target: parsed as the proxy parses them
            method, _, target = j.text.partition(" ")
            try:
                req = parse_request(method, target)
            except KubeParseError as e:
                return Decision(Action.BLOCK, None, f"the request cannot be judged ({e}); refused", j.text)
        if isinstance(req, KubeRequest):
            return evaluate_kube(policy, req, groups=gs, resource=j.resource,
                                 port_forward=bool(getattr(res, "port_forward", False)))
    raise ValueError(f"unknown kind of judgement {j.kind!r}")


def resolve_groups(store: Store, running: Config, users: set[str]) -> dict[str, tuple[tuple[str, ...], str]]:
    """Each user's groups and where they came from. The store does not keep the groups a session ran with: a local
    user's are the running config's (else the new config's, if only it has them), an OIDC user's those of their last
    sign-in (the store's ``users.groups``); anyone else is judged with no groups, and the report says so."""
    out: dict[str, tuple[tuple[str, ...], str]] = {}
    with store.tx() as s:
        oidc = {n: g for n, g in s.execute(select(User.name, User.groups).where(User.name.in_(sorted(users))))}
    for u in users:
        if u in running.users:
            out[u] = (tuple(running.users[u].groups), "the running config")
        elif isinstance(oidc.get(u), list):
            out[u] = (tuple(str(g) for g in oidc[u]), "their last OIDC sign-in")
        else:
            out[u] = ((), "unknown: judged with no groups")
    return out


_MARKER_LINE = re.compile(r'\[[0-9.eE+-]+, ?"m", ?')


def _markers(path: Any) -> Iterator[tuple[float, str]]:
    """A recording's markers: from its keyframe index when that is current, else from the cast's ``m`` lines only
    (output lines are not decoded: a session's bulk output costs a scan, not a JSON parse per line)."""
    idx = load_index(path)
    if idx is not None:
        yield from idx.markers
        return
    read_header(path)  # a file that is not a cast is an error, not a recording without decisions
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not _MARKER_LINE.match(line):
                continue
            try:
                t, _, label = json.loads(line)
                yield float(t), str(label)
            except ValueError as e:
                raise CastError(f"{path}:{n}: a damaged marker line ({e})") from None


@dataclass
class _Reader:
    """Reads one session's markers into judgements (``reproduces`` settles a marker whose reason and text share a
    ``: ``, by judging the candidates under the running config)."""

    sess: SessionRecord
    res_kind: str
    rule_reasons: frozenset[str]
    reproduces: Callable[[Judged, Summary], bool]
    groups: tuple[str, ...] = ()
    terminal: bool = True
    verdict_seen: bool = False
    exec_seen: bool = False

    def base(self, t: float, kind: str, s: Summary, text: str = "") -> Judged:
        return Judged(self.sess.id, t, self.sess.user, self.sess.resource, kind, text, s.action, s.rule,
                      groups=self.groups)

    def text_of(self, j: Judged, s: Summary) -> Judged:
        text = split_reason(s.rest, self.rule_reasons, lambda reason, text: self.reproduces(_subject(j, text), s),
                            s.rule)
        if text is None:
            return replace(j, text=s.rest, problem="the marker's reason and judged text cannot be told apart")
        return _subject(j, text)

    def read(self, t: float, label: str) -> Judged | None:
        """The judgement a marker records; None for markers that are not decisions."""
        prefix, _, body = label.partition(": ")
        if prefix == "exec":
            return self._exec(t, body)
        s = parse_summary(body)
        if s is None or prefix not in ("policy", "sql", "kube"):
            return None
        if prefix == "policy":
            return self._policy(t, s)
        if prefix == "sql":
            j = self.text_of(self.base(t, "sql", s), s)
            why = sql_runtime(s)
            return replace(j, problem=why) if why and j.problem is None else j
        return self.text_of(self.base(t, "kube", s), s)

    def _policy(self, t: float, s: Summary) -> Judged:
        if self.sess.mode == "exec" and not self.verdict_seen and self.res_kind == "ssh":
            self.verdict_seen = True  # ``policy: SUMMARY`` after the opening marker: the exec form's verdict
            j = self.base(t, "exec-form", s, self.sess.command or "")
            return replace(j, terminal=self.terminal, problem=None if self.sess.command else "no command recorded")
        kind = {"ssh": "shell", "postgres": "psql"}.get(self.res_kind)
        if s.rest.endswith(f": {WITHHELD}"):
            return replace(self.base(t, kind or self.res_kind, s, WITHHELD),
                           problem="the answer to a secret prompt: not recorded, so not judged again")
        j = self.text_of(self.base(t, kind or self.res_kind, s), s)
        if kind is None:
            return replace(j, problem=f"a typed line on a {self.res_kind} resource: not a kind backtest knows")
        return replace(j, text=j.text.removesuffix(f" {UNECHOED}"))

    def _exec(self, t: float, body: str) -> Judged:
        text, s = split_exec(body)
        first, self.exec_seen = not self.exec_seen, True
        j = self.base(t, "exec", s, text)
        try:
            ev, inferred = guard_exec(text, s.rule, first)
        except ValueError as e:
            return replace(j, problem=f"the exec marker cannot be read back: {e}")
        return replace(j, subject=ev, inferred=inferred)


def _subject(j: Judged, text: str) -> Judged:
    """``j`` reading ``text``; for a Kubernetes request, with the request the text describes (or why it cannot be
    read back). A method and target stay text: :func:`judge` parses them as the proxy did."""
    j = replace(j, text=text)
    if j.kind != "kube":
        return j
    req = kube_request(text)
    if isinstance(req, KubeRequest):
        inferred = "non-interactive (its argv judged too)" if req.subresource in ("exec", "attach") else ""
        return replace(j, subject=req, inferred=inferred)
    return j if req == text else replace(j, problem=req)


def session_judgements(sess: SessionRecord, path: Any, reader: _Reader) -> Iterator[Judged]:
    """The judgements in one session's recording (or one entry saying why there are none to read)."""
    if is_transfer_log(path):
        yield Judged(sess.id, 0.0, sess.user, sess.resource, "transfer", sess.command or "", "allow", None,
                     problem="a file-transfer log: its operations are not judged again by backtest")
        return
    try:
        if sess.mode == "exec":  # without ssh -t the header says TERM=dumb (bastion/sessions/brokered.py)
            reader.terminal = read_header(path).get("env", {}).get("TERM", "dumb") != "dumb"
        for t, label in _markers(path):
            j = reader.read(t, label)
            if j is not None:
                yield j
    except (CastError, OSError) as e:
        yield Judged(sess.id, None, sess.user, sess.resource, "recording", "", "allow", None,
                     problem=f"the recording cannot be read: {e}")


def sessions_in(store: Store, since: datetime | None, user: str | None, resource: str | None
                ) -> Iterator[SessionRecord]:
    """Every session of the window, a page at a time (oldest last: the store's order)."""
    before = None
    while True:
        rows = store.sessions(limit=PAGE, user=user, resource=resource, since=since, before=before)
        yield from rows
        if len(rows) < PAGE:
            return
        before = (rows[-1].started_at, rows[-1].id)


def refused_before_opening(store: Store, since: datetime | None, user: str | None, resource: str | None
                           ) -> Iterator[Judged]:
    """Exec-form commands judged before any session opened, which only the store knows: the ones blocked
    (``command.blocked``, mode exec) and the ones held whose session never opened (denied, withdrawn, expired).
    Whether the client asked for a terminal is not recorded: judged with one (pagers and editors are then opaque,
    the stricter reading)."""
    q = select(AuditEvent).where(AuditEvent.action.in_(("command.blocked", "approval.request")))
    if since is not None:
        q = q.where(AuditEvent.ts >= since)
    with store.tx() as s:
        events = list(s.scalars(q.order_by(AuditEvent.id)))
        opened = set(s.scalars(select(Session.id).where(
            Session.id.in_([e.session_id for e in events if e.session_id]))))
    for e in events:
        d = e.detail or {}
        if e.action == "command.blocked" and d.get("mode") != "exec":
            continue
        if e.action == "approval.request" and (e.session_id in opened or d.get("rule") == ACCESS_RULE):
            continue
        if not e.resource or (user and not fnmatchcase(e.actor, user)) or \
                (resource and not fnmatchcase(e.resource, resource)):
            continue
        action = "block" if e.action == "command.blocked" else "require_approval"
        rule = d.get("rule") if d.get("rule") != "(default)" else None
        yield Judged(None, None, e.actor, e.resource, "exec-form", str(d.get("text", "")), action,
                     rule if isinstance(rule, str) else None, inferred="with a terminal (not recorded)")


def run(store: Store, running: Config, new: Config, *, since: datetime | None, user: str | None = None,
        resource: str | None = None) -> Backtest:
    """Judge again, under ``new``, everything judged in the window; compare with what was decided then."""
    out = Backtest()
    start = time.perf_counter()
    storage = running.recording_storage()
    reasons = frozenset(r.reason for c in (running, new) for p in c.policies.values() for r in p.rules if r.reason)
    found: list[Judged] = []
    sessions = list(sessions_in(store, since, user, resource))
    stored = list(refused_before_opening(store, since, user, resource))
    groups = resolve_groups(store, running, {s.user for s in sessions} | {j.user for j in stored})
    out.groups = {u: why for u, (_, why) in groups.items()}
    for sess in sessions:
        res = running.resources.get(sess.resource) or new.resources.get(sess.resource)
        reader = _Reader(sess, res.kind if res is not None else "unknown", reasons,
                         lambda j, s: _reproduces(running, j, s) or _reproduces(new, j, s), groups[sess.user][0])
        if not sess.recording:
            found.append(Judged(sess.id, None, sess.user, sess.resource, "recording", "", "allow", None,
                                problem="no recording (pruned or never written)"))
            continue
        try:
            path = storage.local(sess.recording, sess.sha256)
        except (OSError, StorageError) as e:
            found.append(Judged(sess.id, None, sess.user, sess.resource, "recording", "", "allow", None,
                                problem=f"the recording cannot be fetched: {e}"))
            continue
        found.extend(session_judgements(sess, path, reader))
    found.extend(replace(j, groups=groups[j.user][0]) for j in stored)
    memo: dict[tuple[Any, ...], Decision] = {}  # the engine is pure: the same question gets the same answer
    for j in found:
        _compare(out, new, j, memo)
    out.seconds = time.perf_counter() - start
    return out


def _compare(out: Backtest, new: Config, j: Judged, memo: dict[tuple[Any, ...], Decision]) -> None:
    """Judge ``j`` under ``new`` (once per distinct question) and file it as a change, or as not judged."""
    if j.problem is not None:
        out.unjudged.append(j)
        return
    if j.resource not in new.resources:
        out.unjudged.append(replace(j, problem=f"the new config has no resource {j.resource!r}"))
        return
    key = (j.kind, j.resource, j.groups, j.text, j.terminal, j.subject)
    d = memo.get(key)
    if d is None:
        try:
            d = memo[key] = judge(new, j)
        except ValueError as e:
            out.unjudged.append(replace(j, problem=str(e)))
            return
    out.judged += 1
    if d.action.label != j.action:
        out.changes.append(Change(j, d))


def _reproduces(running: Config, j: Judged, s: Summary) -> bool:
    """Whether ``j`` (a candidate reading of a marker), judged under the running config, gives the recorded
    decision word for word."""
    if j.resource not in running.resources:
        return False
    try:
        d = judge(running, j)
    except (ValueError, KeyError):
        return False
    return d.action.label == s.action and d.rule == s.rule and s.rest == f"{d.reason}: {j.text}"

