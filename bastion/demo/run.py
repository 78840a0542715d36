"""``bastion demo``: everything under one state directory, reused on the next run."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import asyncssh

from bastion.config import Config, ConfigError, load_config
from bastion.demo import stopping
from bastion.demo.configs import DEMO_DB, DEMO_DB_POLICY, DEMO_SHELL, DEMO_SHELL_POLICIES, DEMO_USERS, yaml_str
from bastion.demo.kube import DEMO_K8S, DEMO_K8S_POLICY, DemoKube, find_demo_kubectl
from bastion.demo.lifeline import DemoBusy, Lifeline
from bastion.demo.ports import demo_ports, first_busy
from bastion.keyfiles import ensure_private_key

if TYPE_CHECKING:  # imported when the demo starts: tests import prepare() without the daemon's dependencies
    from bastion.demo.idp import DemoIdp
    from bastion.demo.pg import DemoPostgres
    from bastion.demo.shell_target import DemoShell

log = logging.getLogger(__name__)
Record = Callable[[str, int, int], None]  # told (name, pid, stop signal) of each process the demo starts

def prepare(state: Path, port: int, db_port: int | None = None, kube: tuple[int, str] | None = None, *,
            shell: bool = True, issuer: str | None = None) -> tuple[Path, asyncssh.SSHKey, asyncssh.SSHKey, int]:
    """Create (or reuse) keys and write ``state/bastion.yaml`` (with demo-shell and demo-shell-strict when
    ``shell``, demo-db on ``db_port``, demo-k8s on ``kube`` = (simulated API server's port, kubectl) and OIDC
    sign-in at the demo's provider ``issuer`` when given); return config path, target keys and port."""
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    keys = state / "keys"
    for name in DEMO_USERS:
        ensure_private_key(keys / name)
    ensure_private_key(keys / "dave")  # a key nobody has bound yet: dave signs in with it (OIDC)
    ensure_private_key(keys / "host_ed25519", "bastion host key")  # now: the daemon need not warn it makes one
    target_host = ensure_private_key(keys / "demo-target-host")
    target_client = ensure_private_key(keys / "demo-target-credential")
    target_port = port + 1
    users = "".join(
        f"  {name}:\n    groups: [{', '.join(groups)}]\n    authorized_keys_file: keys/{name}.pub\n"
        for name, groups in DEMO_USERS.items())
    host_key_line = target_host.export_public_key().decode().split()
    resources, policies, operated = "", "", []
    if shell:
        resources += DEMO_SHELL.format(port=target_port, host_key=yaml_str(host_key_line[0] + " " + host_key_line[1]))
        policies += DEMO_SHELL_POLICIES
        operated += ["demo-shell", "demo-shell-strict", "demo-shell-moderated"]
    if db_port is not None:
        resources += DEMO_DB.format(port=db_port)
        policies += DEMO_DB_POLICY
        operated.append("demo-db")
    if kube is not None:
        resources += DEMO_K8S.format(port=kube[0])
        policies += DEMO_K8S_POLICY
        operated.append("demo-k8s")
    kubectl = f"kubectl: {yaml_str(kube[1])}\n" if kube is not None else ""
    oidc = ""
    if issuer is not None:  # dave is no local user: an unknown key of his opens the sign-in screen
        from bastion.demo.idp import CLIENT_ID, CLIENT_SECRET_FILE

        oidc = (f"oidc:   # the demo's identity provider (bastion/demo/oidc); its people's groups map to roles\n"
                f"  issuer: {yaml_str(issuer)}\n  client_id: {CLIENT_ID}\n"
                f"  client_secret_file: {CLIENT_SECRET_FILE}\n")
    # access on request: carol asks in her menu, bob grants it (F2) for 15 min
    request = "    request: [demo-shell]\n    request_ttl: 900\n" if shell else ""
    cfg = f"""\
# Written by `bastion demo` on every start; edit a copy for real use.
listen:
  host: 127.0.0.1
  port: {port}
host_keys: [keys/host_ed25519]
database: sqlite:///bastion.db
recordings_dir: recordings
log_dir: logs
{kubectl}{oidc}users:
{users}resources:{"" if resources else " {}"}
{resources}roles:
  operators:
    groups: [ops]
    resources: [{", ".join(operated)}]
  reviewers:
    groups: [reviewers]
    review: true
  auditors:
    groups: [auditors]
    audit: true
{request}policies:{"" if policies else " {}"}
{policies}"""
    path = state / "bastion.yaml"
    path.write_text(cfg)
    return path, target_host, target_client, target_port


@dataclass
class DemoParts:
    """What the demo runs beside the daemon; each part is None when it is not available here (the demo says why)."""

    shell: DemoShell | None = None
    pg: DemoPostgres | None = None
    kube: DemoKube | None = None
    kubectl: str | None = None
    idp: DemoIdp | None = None
    idp_off: str = ""  # why the OIDC sign-in is off (when idp is None)

    def stop(self) -> None:
        """Stop what has started (any part may not have)."""
        if self.idp is not None:
            self.idp.stop()
        if self.pg is not None:
            self.pg.stop()
        if self.kube is not None:
            self.kube.stop()


def _start_shell(state: Path) -> DemoShell | None:
    from bastion.demo.shell_target import demo_shell
    from bastion.sandbox import SandboxError

    try:  # fail closed: no sandbox, no demo-shell (a shell as this user would read every secret in the state dir)
        return demo_shell(state / "target")
    except (SandboxError, OSError) as e:
        print(f"demo-shell is not available: {e}")
        return None


def _start_pg(parts: DemoParts, state: Path, port: int, record: Record) -> None:
    from bastion.demo.pg import DemoPostgres

    if not DemoPostgres.available():
        print("demo-db is not available: PostgreSQL server binaries not found (apt-get install postgresql)")
        return
    parts.pg = DemoPostgres(state, port)
    try:
        parts.pg.start(record)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        print(f"demo-db is not available: {e}")
        parts.pg.stop()
        parts.pg = None


def _start_kube(state: Path, port: int, kubectl: str | None) -> DemoKube | None:
    if kubectl is None:
        print("demo-k8s is not available: no kubectl >= 1.30 found (scripts/setup --demo installs one where apt "
              "offers it)")
        return None
    kube = DemoKube(state, port)
    try:
        kube.start()
    except OSError as e:
        print(f"demo-k8s is not available: {e}")
        return None
    return kube


def start_parts(parts: DemoParts, state: Path, port: int, record: Record) -> None:
    """Start, into ``parts``, the sandboxed shell, PostgreSQL on ``port + 2``, the identity provider (a free port)
    and the simulated cluster on ``port + 3``, as far as this machine has what they need; ``record`` is told each
    process started. In ``parts`` as they start, so that an interruption stops those already running. The
    processes come first, from this (the main) thread and before the simulated cluster's thread exists: their
    parent-death signal is tied to the forking thread, and a fork is simplest with one thread."""
    from bastion.demo.idp import IdpUnavailable, start_idp

    parts.shell = _start_shell(state)
    _start_pg(parts, state, port + 2, record)
    try:  # fail safe: without it the demo runs as before, and the banner says why
        parts.idp = start_idp(state, state / "logs", record=record)
    except (IdpUnavailable, OSError) as e:
        parts.idp_off = f"OIDC sign-in is off: {e}"
    parts.kubectl = find_demo_kubectl()
    parts.kube = _start_kube(state, port + 3, parts.kubectl)


def signin_lines(state: Path, port: int, cfg_path: Path, exe: Path | str, parts: DemoParts) -> str:
    """The banner's lines for dave's OIDC sign-in (or one line on why it is off)."""
    if parts.idp is None:
        return f"  sign-in:   {parts.idp_off}\n"
    idp = parts.idp
    curl = "".join(f"               {line}\n" for line in idp.curl_lines())
    return f"""\
  sign-in:   ssh -i {state}/keys/dave -p {port} -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new \
dave@127.0.0.1
             a key not bound to anyone yet opens the OIDC sign-in (URL, code, QR code) at the demo's identity
             provider, oidc-provider on {idp.issuer} (its log: {idp.log_path}).
             In a browser on this machine: open the URL, enter the code, Continue, sign in as dave with password
             {idp.password} and Allow; dave's menu follows (group ops: role operators). The key stays bound; to
             see the sign-in again: {exe} --config {cfg_path} keys revoke --user dave
             No browser on this box: in another shell, paste this with CODE set to the code on the screen:
{curl}"""


def banner(state: Path, port: int, cfg_path: Path, *, shell: bool, tools: str = "", signin: str = "") -> str:
    """How to connect: printed once the demo runs."""
    k = state / "keys"
    exe = Path(sys.argv[0]).resolve() if Path(sys.argv[0]).name == "bastion" else "bastion"
    ssh = f"ssh -i {k}/alice -p {port} -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new"
    query = '"SELECT * FROM customers"'
    shell_lines = f"""\
  direct:    {ssh} -t alice@127.0.0.1 demo-shell     (sandboxed: sees nothing of {state})
             every program it runs is judged under bastion-guard: try  awk 'BEGIN{{system("rm x")}}'  or a script
  exec:      {ssh} alice@127.0.0.1 demo-shell -- echo hi
  allow-list: {ssh} alice@127.0.0.1 demo-shell-strict -- ls -la     (unlisted programs wait for a reviewer)
  moderated: {ssh} -t alice@127.0.0.1 demo-shell-moderated     (waits until bob watches it from F4)
""" if shell else ""
    request_line = ("  on request: carol (auditor) may ask for demo-shell: Enter on it in her menu, give a reason, "
                    "bob approves (F2)\n") if shell else ""
    return f"""
bastion demo is running (state in {state})

  operator:  {ssh} alice@127.0.0.1
{shell_lines}\
  database:  {ssh} alice@127.0.0.1 demo-db -- {query}
  cluster:   {ssh} alice@127.0.0.1 demo-k8s -- kubectl get pods     (a simulated API server)
  reviewer:  ssh -i {k}/bob -p {port} bob@127.0.0.1        auditor: ssh -i {k}/carol -p {port} carol@127.0.0.1
             bob: F2 the queue, F4 live sessions; or, from any ssh: ssh -i {k}/bob -p {port} bob@127.0.0.1 review
{request_line}\
{signin}\
{tools}\
  sessions:  {exe} --config {cfg_path} sessions list
  replay:    {exe} --config {cfg_path} replay SESSION_ID

Ctrl-C stops the demo.
"""


async def serve_demo(cfg: Config, shell: DemoShell | None, target: tuple[int, asyncssh.SSHKey, asyncssh.SSHKey],
                     text: str) -> str:
    """The demo target (when ``shell``) on ``target`` = (port, host key, client key) and the daemon; print ``text``
    once they listen; run until SIGINT, SIGTERM or SIGHUP (its name is returned), then stop the daemon gracefully."""
    from bastion.daemon import Daemon
    from bastion.demo.shell_target import start_demo_target

    acceptor = None
    if shell is not None:
        acceptor = await start_demo_target("127.0.0.1", target[0], target[1], target[2], shell)
    daemon = Daemon(cfg)
    await daemon.start()
    print(text, flush=True)
    try:
        why = await stopping.wait_for_stop()
        log.info("bastion demo stopping: %s", why)
        return why
    finally:
        await daemon.stop()
        if acceptor is not None:
            acceptor.close()
        stopping.block_stop_signals()  # until run_demo's cleanup has its handlers: the loop's go with it


def say(line: str) -> None:
    """One line on the demo's terminal, which may be gone (closed under a stopping demo): then nowhere."""
    try:
        print(line, flush=True)
    except OSError:
        stopping.mute_dead_terminal()


def run_demo(state: Path, port: int, *, setup_logging: Callable[[Path | None], None]) -> int:
    """Prepare the state dir, start the demo's parts and the daemon, print how to connect, run until told to stop
    (Ctrl-C, SIGTERM, SIGHUP or the terminal closing), then stop everything it started, in any case: processes
    it started also die with it when it is killed, and the next start stops what a killed one left.
    ``setup_logging(log_dir)`` is called once the config is known (the CLI owns logging)."""
    state = state.resolve()
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    parts, life = DemoParts(), None
    with stopping.stops_raise():
        try:
            life = Lifeline.claim(state, say)
            if busy := first_busy(demo_ports(port)):
                say(busy)
                return 1
            start_parts(parts, state, port, life.add)
            if not _serve(state, port, parts, setup_logging):
                return 1
        except DemoBusy as e:
            say(str(e))
            return 1
        except (KeyboardInterrupt, stopping.Stopped):
            pass
        finally:
            stopping.hold_stop_signals()  # the cleanup runs to its end
            parts.stop()
            if life is not None:
                life.release()
    say("bastion demo stopped")
    return 0


def _serve(state: Path, port: int, parts: DemoParts, setup_logging: Callable[[Path | None], None]) -> bool:
    """Write the config for ``parts``, print the banner, run the daemon until a stop signal; False when the config
    does not load."""
    cfg_path, host_key, client_key, target_port = prepare(
        state, port, parts.pg.port if parts.pg else None,
        (parts.kube.port, parts.kubectl) if parts.kube and parts.kubectl else None, shell=parts.shell is not None,
        issuer=parts.idp.issuer if parts.idp else None)
    try:
        cfg = load_config(cfg_path)
    except ConfigError as e:
        say(str(e))
        return False
    setup_logging(cfg.log_dir)
    quiet_console()
    tools = ""
    if parts.shell is not None:
        from bastion.demo.tools import tools_lines, write_ssh_config

        tools = tools_lines(state, port, write_ssh_config(state, port, cfg))
    exe = Path(sys.argv[0]).resolve() if Path(sys.argv[0]).name == "bastion" else "bastion"
    text = banner(state, port, cfg_path, shell=parts.shell is not None, tools=tools,
                  signin=signin_lines(state, port, cfg_path, exe, parts))
    asyncio.run(serve_demo(cfg, parts.shell, (target_port, host_key, client_key), text))
    return True


def quiet_console() -> None:
    """The terminal shows the banner first: the daemon's INFO lines (keys created, listening) go to the log file
    only (``STATE/logs/bastion.log``); warnings and errors still show."""
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:
            handler.setLevel(logging.WARNING)
