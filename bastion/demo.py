"""``bastion demo``: everything under one state directory, reused on the next run."""

from __future__ import annotations

import asyncio
import getpass
import logging
import re
import subprocess
import sys
from pathlib import Path

import asyncssh

from bastion.config import ConfigError, load_config
from bastion.demo_kube import DEMO_K8S, DEMO_K8S_POLICY, DemoKube, find_demo_kubectl
from bastion.keyfiles import ensure_private_key

log = logging.getLogger(__name__)

DEMO_USERS = {"alice": ["ops"], "bob": ["reviewers"], "carol": ["auditors"]}


def _yaml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


DEMO_DB = """\
  demo-db:
    kind: postgres
    description: "Demo database (local PostgreSQL started by the demo): customers, ssn masked"
    host: 127.0.0.1
    port: {port}
    database: demo
    user: demo_app
    credential: {{password_file: secrets/demo-db.pw}}
    tls: {{mode: disable}}
    policy: demo-db
    restrict: true
    masking:
      - {{table: customers, column: ssn, style: keep_last, keep: 4}}
"""
DEMO_DB_POLICY = """\
  demo-db:
    default: allow
    rules:
      - name: no-unbounded-writes
        statements: [delete, update]
        traits: [no_where]
        action: block
        reason: DELETE and UPDATE need a WHERE that restricts rows
      - name: ddl-needs-approval
        statements: [drop, truncate, alter]
        action: require_approval
        approvers: {roles: [reviewers], count: 1}
        reason: schema changes need a reviewer's approval
      - name: no-server-files
        traits: [copy_program, copy_file, dangerous_function]
        action: block
        reason: server-side files and programs are off limits
"""


def prepare(state: Path, port: int, db_port: int | None = None, kube: tuple[int, str] | None = None,
            ) -> tuple[Path, asyncssh.SSHKey, asyncssh.SSHKey, int]:
    """Create (or reuse) keys and write ``state/bastion.yaml`` (with demo-db on ``db_port`` and demo-k8s on
    ``kube`` = (simulated API server's port, kubectl) when given); return config path, target keys and port."""
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    keys = state / "keys"
    for name in DEMO_USERS:
        ensure_private_key(keys / name)
    target_host = ensure_private_key(keys / "demo-target-host")
    target_client = ensure_private_key(keys / "demo-target-credential")
    target_port = port + 1
    users = "".join(
        f"  {name}:\n    groups: [{', '.join(groups)}]\n    authorized_keys_file: keys/{name}.pub\n"
        for name, groups in DEMO_USERS.items())
    host_key_line = target_host.export_public_key().decode().split()
    cfg = f"""\
# Written by `bastion demo` on every start; edit a copy for real use.
listen:
  host: 127.0.0.1
  port: {port}
host_keys: [keys/host_ed25519]
database: sqlite:///bastion.db
recordings_dir: recordings
log_dir: logs
users:
{users}resources:
  demo-shell:
    kind: ssh
    description: "Demo host: a real shell on this machine, via an embedded SSH server"
    host: 127.0.0.1
    port: {target_port}
    user: {_yaml_str(getpass.getuser())}
    policy: demo-shell
    credential:
      private_key_file: keys/demo-target-credential
    host_key: {_yaml_str(host_key_line[0] + " " + host_key_line[1])}
roles:
  operators:
    groups: [ops]
    resources: [demo-shell]
  reviewers:
    groups: [reviewers]
    review: true
  auditors:
    groups: [auditors]
    audit: true
    request: [demo-shell]       # access on request: carol asks in her menu, bob grants it (F2) for 15 min
    request_ttl: 900
policies:
  demo-shell:
    default: allow
    rules:
      - name: no-rm
        programs: [rm, unlink, shred, rmdir]
        action: block
        reason: deleting files is not allowed on demo-shell
      - name: no-find-delete
        programs: [find]
        args: [-delete]
        action: block
        reason: deleting files is not allowed on demo-shell
      - name: chmod-needs-approval
        programs: [chmod, chown, chgrp]
        action: require_approval
        approvers: {{roles: [reviewers], count: 1}}
        timeout: 900
        reason: permission changes need a reviewer's approval
"""
    if db_port is not None:
        cfg = cfg.replace("roles:\n", DEMO_DB.format(port=db_port) + "roles:\n", 1)
        cfg = cfg.replace("    resources: [demo-shell]", "    resources: [demo-shell, demo-db]")
        cfg += DEMO_DB_POLICY
    if kube is not None:
        cfg = cfg.replace("roles:\n", DEMO_K8S.format(port=kube[0]) + "roles:\n", 1)
        cfg = re.sub(r"(?m)^(    resources: \[demo-shell[^]]*)\]", r"\1, demo-k8s]", cfg, count=1)
        cfg = cfg.replace("users:\n", f"kubectl: {_yaml_str(kube[1])}\nusers:\n", 1)
        cfg += DEMO_K8S_POLICY
    path = state / "bastion.yaml"
    path.write_text(cfg)
    return path, target_host, target_client, target_port


def run_demo(state: Path, port: int, *, verbose: bool = False) -> int:
    """Prepare the state dir, start the demo target and the daemon, print how to connect, run until Ctrl-C."""
    from bastion.cli import _setup_logging
    from bastion.daemon import Daemon, wait_for_stop_signal
    from bastion.demo_pg import DemoPostgres
    from bastion.demo_target import start_demo_target

    state = state.resolve()
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    pg: DemoPostgres | None = None
    if DemoPostgres.available():
        pg = DemoPostgres(state, port + 2)
        try:
            pg.start()
        except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
            print(f"demo-db is not available: {e}")
            pg.stop()
            pg = None
    else:
        print("demo-db is not available: PostgreSQL server binaries not found (apt-get install postgresql)")
    kube: DemoKube | None = None
    kubectl = find_demo_kubectl()
    if kubectl is None:
        print("demo-k8s is not available: no kubectl >= 1.30 found (scripts/setup --demo installs one where apt "
              "offers it)")
    else:
        kube = DemoKube(state, port + 3)
        try:
            kube.start()
        except OSError as e:
            print(f"demo-k8s is not available: {e}")
            kube = None
    cfg_path, host_key, client_key, target_port = prepare(state, port, pg.port if pg else None,
                                                          (kube.port, kubectl) if kube and kubectl else None)
    try:
        cfg = load_config(cfg_path)
    except ConfigError as e:
        print(e)
        if kube is not None:
            kube.stop()
        return 1
    _setup_logging(verbose, cfg.log_dir)

    async def main() -> None:
        target = await start_demo_target("127.0.0.1", target_port, host_key, client_key)
        daemon = Daemon(cfg)
        await daemon.start()
        k = state / "keys"
        exe = Path(sys.argv[0]).resolve() if Path(sys.argv[0]).name == "bastion" else "bastion"
        ssh = f"ssh -i {k}/alice -p {port} -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new"
        query = '"SELECT * FROM customers"'
        print(f"""
bastion demo is running (state in {state})

  operator:  {ssh} alice@127.0.0.1
  direct:    {ssh} -t alice@127.0.0.1 demo-shell
  exec:      {ssh} alice@127.0.0.1 demo-shell -- echo hi
  database:  {ssh} alice@127.0.0.1 demo-db -- {query}
  cluster:   {ssh} alice@127.0.0.1 demo-k8s -- kubectl get pods     (a simulated API server)
  reviewer:  ssh -i {k}/bob -p {port} bob@127.0.0.1        auditor: ssh -i {k}/carol -p {port} carol@127.0.0.1
  on request: carol (auditor) may ask for demo-shell: Enter on it in her menu, give a reason, bob approves (F2)
  sessions:  {exe} --config {cfg_path} sessions list
  replay:    {exe} --config {cfg_path} replay SESSION_ID

Ctrl-C stops the demo.
""", flush=True)
        try:
            await wait_for_stop_signal()
        finally:
            await daemon.stop()
            target.close()

    try:
        asyncio.run(main())
    finally:
        if pg is not None:
            pg.stop()
        if kube is not None:
            kube.stop()
    print("bastion demo stopped")
    return 0
