"""The bastion daemon: builds the :class:`~bastion.services.Services`, listens, and owns the lifecycle (start,
reload, cluster bookkeeping, stop). Connections get the services, never the daemon."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh

from bastion.audit.worker import AuditWorker
from bastion.config import Config, ConfigError, load_config
from bastion.export.worker import Exporter
from bastion.keyfiles import CIPHERS, ensure_private_key
from bastion.metrics import set_connections, use_directory
from bastion.metrics.endpoint import Endpoint
from bastion.metrics.files import Reaper, metrics_dir, prepare
from bastion.metrics.logs import set_process, use_format
from bastion.notify.events import Enqueuer
from bastion.notify.worker import Deliverer
from bastion.oidc.login import LoginService
from bastion.oversight.approvals import ApprovalService
from bastion.oversight.live import LiveRegistry
from bastion.sandbox import make_sandbox, python_paths
from bastion.sdnotify import monotonic_usec, notify, watchdog_interval
from bastion.services import Background, Services
from bastion.sessions.events import handle_event
from bastion.ssh.admission import ConnectionCounter, UserKeys
from bastion.ssh.jump import JumpHost
from bastion.ssh.server import BastionServer
from bastion.store.db import Store
from bastion.store.listen import CHANNEL, PgListener

log = logging.getLogger(__name__)
MENU_PACKAGES = ("tui", "bastion")  # the session process imports only these of ours (tui and bastion.rpc.proto)
RESTART_ONLY = ("listen", "host_keys", "host_ca_key", "database_url", "recordings_dir", "recordings", "log_dir",
                "sandbox", "oidc", "cluster", "processes", "metrics", "log_format")


def ensure_host_key(path: Path) -> asyncssh.SSHKey:
    """The host key at ``path``, created once (never per start) if missing."""
    if not path.exists():
        log.warning("creating new host key %s", path)
    return ensure_private_key(path, "bastion host key")


def ensure_host_ca(config: Config) -> asyncssh.SSHKey:
    """The host CA that signs ``ssh -J`` host certificates, created once if missing."""
    return ensure_private_key(config.host_ca, "bastion host CA")


def jump_host(services: Services, host_keys: list[asyncssh.SSHKey], keys: Callable[[], UserKeys]) -> JumpHost:
    """How this process serves ``ssh -J`` (the CA was created at start: only read here)."""
    config = services.config
    return JumpHost(services, host_keys[0], asyncssh.read_private_key(str(config.host_ca)),
                    server_options(config, host_keys), keys)


def node_name(config: Config) -> str:
    """This node's name in the store (its connection processes carry it too)."""
    return config.cluster.node_name or f"{socket.gethostname()}:{config.listen.port}"


def start_operations(config: Config, worker: str) -> Reaper | None:
    """Before anything else of a daemon starts: logs in the config's format, named with this node and ``worker``;
    and, with ``metrics`` on, prometheus_client's multiprocess mode in a fresh private directory (before any fork,
    so every process of the node counts into it). The reaper folds dead processes' counters into the archive."""
    use_format(config.log_format)
    set_process(node=node_name(config), worker=worker)
    if config.metrics is None:
        return None
    path = metrics_dir(config.host_keys[0].parent, config.listen.port)
    try:
        prepare(path)
    except (OSError, RuntimeError) as e:
        log.error("metrics: %s", e)
        raise SystemExit(1) from None
    use_directory(path)
    return Reaper(path)


def server_options(config: Config, host_keys: list[asyncssh.SSHKey]) -> dict[str, Any]:
    """How every connection is served, by this process or by a connection process of its own."""
    lim, oidc = config.limits, config.oidc
    # the SSH login timeout: above the longest keyboard-interactive device flow when OIDC is on
    login_timeout = max(lim.login_timeout, oidc.login_timeout + 30) if oidc is not None else lim.login_timeout
    return dict(server_host_keys=host_keys, login_timeout=login_timeout, agent_forwarding=False,
                x11_forwarding=False, allow_pty=True, line_editor=False, encoding=None, keepalive_interval=60,
                allow_scp=False, config=[], encryption_algs=CIPHERS,
                send_server_host_keys=True)  # clients learn every listed key: host key rotation without a flag day


def build_services(config: Config, background: Background | None = None, *, node: str | None = None,
                   pool_size: int | None = None) -> Services:
    """The daemon's shared parts for ``config``, not yet started (no migration, no listening)."""
    bg = background or Background()
    store = Store(config.database_url, pool_size=pool_size)
    node = node or node_name(config)
    sandbox = make_sandbox(config.sandbox.mode, config.sandbox.user)  # checked with the config
    if not sandbox.active:
        log.warning("session processes run without a sandbox (sandbox.mode %s%s)", config.sandbox.mode,
                    "" if config.sandbox.mode == "off" else ", bubblewrap not installed")
    storage = config.recording_storage()  # where closed recordings are kept (and read back from)

    def current() -> Config:  # the running config, read at each use (a reload replaces it)
        return services.config

    services = Services(
        config=config, store=store, storage=storage,
        approvals=ApprovalService(store, node, lambda: current().roles, bg.spawn, lambda ev: services.publish(ev)),
        live=LiveRegistry(), login=None,
        sandbox=sandbox, auditing=AuditWorker(config, store, storage), node=node, spawn=bg.spawn,
        menu_paths=python_paths(MENU_PACKAGES),  # what the sandboxed menu may read of the installation
        player_paths=python_paths(("recorder",)),  # and the sandboxed player (F5, p)
        publish=lambda event: bg.spawn(asyncio.to_thread(store.notify, CHANNEL, json.dumps(event))),
        cluster=store.shared)
    if config.oidc is not None:  # it reads the running config at once (the client secret)
        services.login = LoginService(current, store)
    # every process that audits enqueues the notifications of what it audits (the node's delivery loop sends them)
    store.on_audit = Enqueuer(current, node)
    return services


def reread(old: Config) -> tuple[Config, list[str]]:
    """The config file as it is now, but with the running values of what changes only with a restart; and the
    names of those that were changed in the file (ConfigError when the file has problems)."""
    new = load_config(old.path, check_files=True)
    fixed = [f for f in RESTART_ONLY if getattr(new, f) != getattr(old, f)]
    return dataclasses.replace(new, **{f: getattr(old, f) for f in fixed}), fixed


def reload_services(s: Services, *, audit: bool = True) -> bool:
    """Re-read the config file (SIGHUP, ``systemctl reload``) without dropping anyone: new connections and new
    sessions use the new users, keys, roles, resources and policies; open sessions keep the policy they opened
    with; connections keep the roles they logged in with. A config with problems is refused as a whole and the
    running one stays. Listening address, host keys, database, recordings directory, logs, sandbox, OIDC and
    processes change only with a restart."""
    try:
        new, fixed = reread(s.config)
    except ConfigError as e:
        log.error("reload refused; the running config stays:\n%s", e)
        if audit:
            s.spawn(asyncio.to_thread(s.store.audit, "bastion", "config.reload", "refused",
                                      problems=e.problems[:20]))
        return False
    if fixed:
        log.warning("reload: %s change only with a restart; the running values stay", ", ".join(fixed))
    s.config = new
    log.info("reloaded %s: %d resources, %d local users, %d roles", new.path, len(new.resources),
             len(new.users), len(new.roles))
    if audit:  # once per node: its connection processes reload quietly
        s.spawn(asyncio.to_thread(s.store.audit, "bastion", "config.reload", "ok", kept=fixed))
    return True


class Daemon:
    """Owns the services and the listening SSH server."""

    def __init__(self, config: Config):
        self.services = build_services(config)
        self.counter = ConnectionCounter()
        self.keys = UserKeys(config.user_keys)
        self.server: asyncssh.SSHAcceptor | None = None
        self.listening = False  # SSH connections are being accepted (the supervisor tells a node process so)
        self.endpoint: Endpoint | None = None  # /metrics, /healthz, /readyz (metrics on)
        # what another node said reaches this process's sessions (the node process of per-connection processes
        # passes it on to them instead)
        self.on_event: Callable[[dict[str, Any]], None] = lambda event: handle_event(self.services, event)
        self._listener: PgListener | None = None
        self._cluster: asyncio.Task[None] | None = None
        # one delivery loop per node, in the process that keeps its books (see bastion.notify.worker)
        self.notifier = Deliverer(self.services.store, lambda: self.services.config)
        # and one audit-export loop (see bastion.export.worker): each sink is exported by one node at a time
        self.exporter = Exporter(self.services.store, lambda: self.services.config, self.services.node)

    @property
    def config(self) -> Config:
        return self.services.config

    async def start(self, *, listen: bool = True) -> None:
        """Migrate the store, mark sessions of a previous run interrupted, and listen (unless the node's
        connections are served by processes of their own: then this is the node process, which keeps the books)."""
        s = self.services
        await asyncio.to_thread(s.store.migrate)
        n = await asyncio.to_thread(s.store.mark_interrupted, s.node)
        if n:
            log.warning("marked %d session(s) of a previous run as interrupted", n)
        await s.approvals.cancel_node()
        self.config.recordings_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        await s.auditing.start()
        await asyncio.to_thread(s.store.heartbeat, s.node, starting=True)
        if s.store.shared:  # several nodes may share it: hear what they do
            self._listener = PgListener(s.store.url, self._remote_event)
            self._listener.start()
        self._cluster = asyncio.create_task(self._cluster_loop())
        enqueuer = s.store.on_audit
        if isinstance(enqueuer, Enqueuer):  # what this process enqueues is looked at at once
            enqueuer.wake = self.notifier.wake_threadsafe(asyncio.get_running_loop())
        self.notifier.start()
        self.exporter.start()
        if self.config.metrics is not None:
            self.endpoint = Endpoint(self.config, s.node, process="daemon" if listen else "node", shared=s.store.shared,
                                     listening=lambda: self.listening,
                                     tick=(lambda: set_connections(self.counter.total)) if listen else None)
            await self.endpoint.start()
        if not listen:
            return
        host_keys = [ensure_host_key(p) for p in self.config.host_keys]
        ensure_host_ca(self.config)
        jump = jump_host(s, host_keys, lambda: self.keys)
        self.server = await asyncssh.create_server(
            lambda: BastionServer(s, self.counter, lambda: self.keys, jump), self.config.listen.host,
            self.config.listen.port, reuse_address=True, **server_options(self.config, host_keys))
        self.listening = True
        log.info("listening on %s:%d (host key %s)", self.config.listen.host, self.config.listen.port,
                 ", ".join(k.get_fingerprint() for k in host_keys))

    def reload(self) -> bool:
        """Re-read the config file (SIGHUP, ``systemctl reload``); see :func:`reload_services`."""
        if not reload_services(self.services):
            return False
        self.keys = UserKeys(self.config.user_keys)
        return True

    def _remote_event(self, event: dict[str, Any]) -> None:
        """Something another node published (LISTEN); the node process of per-connection processes passes it on."""
        self.notifier.wake()  # requests and terminations are notified: it may have enqueued some
        self.on_event(event)


    async def _cluster_loop(self) -> None:
        """Beat; and take over the bookkeeping of nodes that stopped beating (crashed): their active sessions
        become interrupted (recordings hashed and chained) and their pending requests cancelled."""
        s = self.services
        c = self.config.cluster
        while True:
            await asyncio.sleep(c.heartbeat_seconds)
            try:
                await asyncio.to_thread(s.store.heartbeat, s.node)
                for node in await asyncio.to_thread(s.store.expired_nodes, c.node_expiry_seconds):
                    n = await asyncio.to_thread(s.store.mark_interrupted, node)
                    ids = await asyncio.to_thread(s.approvals.db.cancel_pending, node=node,
                                                  reason=f"node {node} stopped answering")
                    await s.approvals.cancelled(ids)
                    log.warning("node %s stopped answering: %d session(s) marked interrupted, %d request(s) "
                                "cancelled", node, n, len(ids))
                    await asyncio.to_thread(s.store.audit, "bastion", "node.expired", "interrupted", node=node,
                                            sessions=n, requests=ids, by=s.node)
            except Exception:
                log.exception("cluster bookkeeping failed; retrying")

    async def stop(self) -> None:
        s = self.services
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        self.listening = False
        if self._cluster is not None:
            self._cluster.cancel()
        if self.endpoint is not None:
            await self.endpoint.stop()
        await self.notifier.stop()
        await self.exporter.stop()
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)
        try:
            await asyncio.to_thread(s.store.heartbeat, s.node, stopping=True)
        except Exception:
            log.exception("cannot record this node's stop")
        await s.auditing.stop()


async def wait_for_stop_signal() -> None:
    """Return on the first SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _watchdog(interval: float) -> None:
    """``WATCHDOG=1`` while this event loop turns (systemd's ``WatchdogSec``)."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)


async def serve(config: Config) -> None:
    """Run the daemon until SIGINT/SIGTERM; SIGHUP reloads the config. Tells systemd when it is ready."""
    start_operations(config, "daemon")
    daemon = Daemon(config)
    await daemon.start()

    def reload() -> None:
        notify("RELOADING=1", monotonic_usec(), "STATUS=reloading the config")
        ok = daemon.reload()
        notify("READY=1", f"STATUS={'serving' if ok else 'serving; the last reload was refused (see the log)'}")

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)
    notify("READY=1", f"STATUS=serving on {config.listen.host}:{config.listen.port}")
    interval = watchdog_interval()
    watchdog = asyncio.create_task(_watchdog(interval)) if interval is not None else None
    try:
        await wait_for_stop_signal()
    finally:
        if watchdog is not None:
            watchdog.cancel()
        log.info("shutting down")
        notify("STOPPING=1", "STATUS=shutting down")
        await daemon.stop()
