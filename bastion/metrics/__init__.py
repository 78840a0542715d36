"""What an operator watches: the bastion's Prometheus metrics, as module-level objects and small helpers.

Every part of the daemon counts through the helpers below (``observe_keystroke(seconds)``, ``session_started(kind,
resource)``...), never through the metric objects directly: :func:`use_directory` replaces the objects when the
daemon turns on prometheus_client's multiprocess mode (the supervisor does it before it forks, so every node and
connection process writes its own memory-mapped file in that directory and the endpoint adds them up). The helpers
look the objects up at each call, so they always count into the current ones.

Labels are bounded by construction: kinds, outcomes, actions and directions come from fixed sets (anything else is
counted as ``other``), resource and rule names come from the config (an admin's list, not the users'), and no label
ever carries a user name, an address or a command. With metrics off the objects are plain in-process values: a
helper costs a lock and an addition.

This module imports nothing of the bastion, so any layer may count (the recorder and the policies stay pure: the
bastion counts around them). Where each helper is called, once per event:

- ``session_started``/``session_ended``: :class:`bastion.sessions.brokered.BrokeredSession`, when its session row
  is created and when ``run`` returns (the row's outcome; ``error``/``interrupted`` when an exception or a
  cancellation ended it first), for every kind: ssh, postgres, kubernetes, local, ``transfer`` (sftp, scp, rsync),
  ``jump`` (a session inside ``ssh -J``).
- ``policy_decision``: the exec form's command in :mod:`bastion.sessions.broker`; each typed line and each
  statement, request, file operation or program in :mod:`bastion.sessions.hooks` (psql's SQL lines once, at the
  wire proxy).
- ``approval_ended``: :class:`bastion.oversight.approvals.ApprovalService`, where a request leaves ``pending``.
- ``relayed``/``observe_keystroke``: the relay (:mod:`bastion.terminal.relay`), per chunk of a brokered session,
  and ``ssh -L`` forwards (:mod:`bastion.ssh.forward`); the protocol proxies and the ``-J`` bridge carry bytes
  already counted at a relay, so they do not count again.
- ``recording_failed``: a recording that cannot be created or closed (``write``,
  :mod:`bastion.sessions.brokered`), an indexer that exits with ``UPLOAD_FAILED`` (``upload``,
  :mod:`bastion.audit.worker`: the indexer child process itself never counts, so it leaves no file behind).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Keystroke relay latency (client byte in -> target byte out): sub-millisecond is normal, 100 ms is felt."""
WAIT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 4 * 3600.0, 86400.0)
"""Approval wait: from seconds (a reviewer at the queue) to a day (a request left overnight)."""
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Event-loop lag: how late a timer fired; anything above ~50 ms is felt as typing lag."""

KINDS = frozenset({"ssh", "postgres", "kubernetes", "local", "menu", "transfer", "forward", "jump"})
OUTCOMES = frozenset({"ok", "closed", "exited", "killed", "lost", "client_disconnected", "unmoderated", "error",
                      "failed", "idle", "expired", "interrupted", "terminated", "denied", "refused", "blocked",
                      "cancelled", "approved", "withdrawn", "timeout"})
"""Session outcomes (the session row's) and approval outcomes (the request's final status)."""
ACTIONS = frozenset({"allow", "warn", "block", "require_approval", "deny", "mask", "rollback"})
PROCESSES = frozenset({"daemon", "node", "connection", "supervisor"})
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

REGISTRY: CollectorRegistry
CONNECTIONS_OPEN: Gauge
PROCESSES_RUNNING: Gauge
SESSIONS_OPEN: Gauge
SESSIONS_STARTED: Counter
SESSIONS_ENDED: Counter
POLICY_DECISIONS: Counter
APPROVAL_DECISIONS: Counter
APPROVAL_WAIT: Histogram
KEYSTROKE_LATENCY: Histogram
RELAY_BYTES: Counter
RECORDING_FAILURES: Counter
LOOP_LAG: Histogram


def _define() -> None:
    """Create every metric (again) with the value class in force: in-process, or a file per process."""
    global REGISTRY, CONNECTIONS_OPEN, PROCESSES_RUNNING, SESSIONS_OPEN, SESSIONS_STARTED, SESSIONS_ENDED
    global POLICY_DECISIONS, APPROVAL_DECISIONS, APPROVAL_WAIT, KEYSTROKE_LATENCY, RELAY_BYTES, RECORDING_FAILURES
    global LOOP_LAG
    r = REGISTRY = CollectorRegistry(auto_describe=True)
    # gauges: "livesum" adds up the processes alive now (a dead process's share goes with mark_process_dead);
    # "livemax" shows the worst living process. No mode that keeps dead processes' values: they would pile up.
    CONNECTIONS_OPEN = Gauge("bastion_connections_open", "SSH connections open on this node (counted against "
                             "limits.max_connections)", registry=r, multiprocess_mode="livesum")
    PROCESSES_RUNNING = Gauge("bastion_processes", "Processes of this node by kind (node, connection, refusing)",
                              ["kind"], registry=r, multiprocess_mode="livesum")
    SESSIONS_OPEN = Gauge("bastion_sessions_open", "Brokered sessions open now, by kind and resource",
                          ["kind", "resource"], registry=r, multiprocess_mode="livesum")
    SESSIONS_STARTED = Counter("bastion_sessions_started", "Brokered sessions started, by kind and resource",
                               ["kind", "resource"], registry=r)
    SESSIONS_ENDED = Counter("bastion_sessions_ended", "Brokered sessions ended, by kind and outcome",
                             ["kind", "outcome"], registry=r)
    POLICY_DECISIONS = Counter("bastion_policy_decisions", "Policy decisions, by action and rule (\"\" when no "
                               "rule matched and the default applied)", ["action", "rule"], registry=r)
    APPROVAL_DECISIONS = Counter("bastion_approval_requests_ended", "Approval requests ended, by outcome "
                                 "(approved, denied, withdrawn, expired, cancelled)", ["outcome"], registry=r)
    APPROVAL_WAIT = Histogram("bastion_approval_wait_seconds", "How long approval requests waited, by outcome",
                              ["outcome"], buckets=WAIT_BUCKETS, registry=r)
    KEYSTROKE_LATENCY = Histogram("bastion_keystroke_latency_seconds", "Interactive relay latency: a client's byte "
                                  "in to the same byte out to the target", buckets=LATENCY_BUCKETS, registry=r)
    RELAY_BYTES = Counter("bastion_relay_bytes", "Bytes relayed, by direction (in: client to target; out: "
                          "target to client) and session kind", ["direction", "kind"], registry=r)
    RECORDING_FAILURES = Counter("bastion_recording_failures", "Recording failures, by operation (write: the "
                                 "local file; upload: to the bucket)", ["op"], registry=r)
    # a histogram only (no gauge of the last lag): each gauge mode is one more file per process to read at a scrape
    LOOP_LAG = Histogram("bastion_event_loop_lag_seconds", "How late a periodic timer fired in each event loop, "
                         "by process kind", ["process"], buckets=LAG_BUCKETS, registry=r)


_define()


def use_directory(path: Path) -> None:
    """Turn on multiprocess mode with ``path`` as the directory of the per-process files, and create the metrics
    anew in it. Call it before forking and before anything counts (the supervisor, or the one-process daemon, at
    start); processes forked afterwards inherit it."""
    os.environ[MULTIPROC_ENV] = str(path)
    values.ValueClass = values.MultiProcessValue()
    _define()


_P = ParamSpec("_P")
_broken = False


def _never_raises(helper: Callable[_P, None]) -> Callable[_P, None]:
    """A helper that cannot fail its caller: a session must never end because a metric could not be written (a
    metrics directory removed under the daemon); the first failure is logged, the rest are silent."""

    @functools.wraps(helper)
    def safe(*args: _P.args, **kwargs: _P.kwargs) -> None:
        global _broken
        try:
            helper(*args, **kwargs)
        except Exception:
            if not _broken:
                _broken = True
                logging.getLogger(__name__).exception("metrics: %s failed; metrics may be incomplete",
                                                      helper.__name__)

    return safe


def _bounded(value: str, known: frozenset[str]) -> str:
    return value if value in known else "other"


def _name(value: str | None) -> str:
    """A name from the config (resource, rule): bounded by the admin's file; cut so a bug cannot flood."""
    return (value or "")[:64]


# -- helpers: the one way the rest of the bastion counts ------------------------------------------------------
@_never_raises
def observe_keystroke(seconds: float) -> None:
    """One interactive byte's trip through the relay (client in -> target out)."""
    KEYSTROKE_LATENCY.observe(max(0.0, seconds))


@_never_raises
def session_started(kind: str, resource: str) -> None:
    """A brokered session began (also counts it open until :func:`session_ended`)."""
    k, r = _bounded(kind, KINDS), _name(resource)
    SESSIONS_STARTED.labels(k, r).inc()
    SESSIONS_OPEN.labels(k, r).inc()


@_never_raises
def session_ended(kind: str, resource: str, outcome: str) -> None:
    """A brokered session ended with ``outcome`` (the session row's outcome)."""
    k = _bounded(kind, KINDS)
    SESSIONS_ENDED.labels(k, _bounded(outcome, OUTCOMES)).inc()
    SESSIONS_OPEN.labels(k, _name(resource)).dec()


@_never_raises
def policy_decision(action: str, rule: str | None) -> None:
    """The engine decided ``action`` by ``rule`` (None/"": the policy's default)."""
    POLICY_DECISIONS.labels(_bounded(action, ACTIONS), _name(rule)).inc()


@_never_raises
def approval_ended(outcome: str, waited_seconds: float) -> None:
    """An approval request left ``pending`` with ``outcome`` after ``waited_seconds``."""
    o = _bounded(outcome, OUTCOMES)
    APPROVAL_DECISIONS.labels(o).inc()
    APPROVAL_WAIT.labels(o).observe(max(0.0, waited_seconds))


@_never_raises
def relayed(direction: str, kind: str, nbytes: int) -> None:
    """``nbytes`` relayed; ``direction`` is ``in`` (client to target) or ``out`` (target to client)."""
    if nbytes > 0:
        RELAY_BYTES.labels("in" if direction == "in" else "out", _bounded(kind, KINDS)).inc(nbytes)


@_never_raises
def recording_failed(op: str) -> None:
    """A recording could not be written (``write``) or uploaded (``upload``)."""
    RECORDING_FAILURES.labels("upload" if op == "upload" else "write").inc()


@_never_raises
def loop_lag(process: str, seconds: float) -> None:
    """One event-loop lag sample of this process (see :mod:`bastion.metrics.loop`)."""
    LOOP_LAG.labels(_bounded(process, PROCESSES)).observe(max(0.0, seconds))


@_never_raises
def set_connections(open_now: int) -> None:
    """Connections open on this node (the supervisor, or the one-process daemon, counts them)."""
    CONNECTIONS_OPEN.set(open_now)


@_never_raises
def set_processes(kind: str, n: int) -> None:
    """How many processes of ``kind`` (node, connection, refusing) the supervisor runs."""
    PROCESSES_RUNNING.labels(kind if kind in ("node", "connection", "refusing") else "other").set(n)


@_never_raises
def preinit() -> None:
    """Make the fixed series exist at zero (a dashboard shows 0, not "no data", before the first event)."""
    for op in ("write", "upload"):
        RECORDING_FAILURES.labels(op)
    for d in ("in", "out"):
        RELAY_BYTES.labels(d, "ssh")
    POLICY_DECISIONS.labels("allow", "")
