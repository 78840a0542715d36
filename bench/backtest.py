"""``bastion policy backtest`` throughput: judgements per second over a store of recorded sessions (typed shell
lines, exec-form commands, SQL statements, Kubernetes requests and bastion-guard execs, as the live path marks
them), re-judged under a stricter config, everything included (reading the store and the casts, reading the markers
back, the engine, the diff). The target is 10,000 judgements per second.

    .venv/bin/python bench/backtest.py [--sessions 200] [--markers 250]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import asyncssh

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import machine, table  # noqa: E402

from bastion.audit.backtest import judge, run  # noqa: E402
from bastion.audit.backtest_markers import Judged  # noqa: E402
from bastion.config import Config, load_config  # noqa: E402
from bastion.store.db import Store  # noqa: E402
from policies.execs import Exec  # noqa: E402
from policies.kube import parse_request  # noqa: E402
from recorder.asciicast import CastWriter  # noqa: E402

PERMISSIVE = """\
  sh: {default: allow, rules: [{name: ok-ls, programs: [ls], action: allow}]}
  sql: {default: allow}
  k8s: {default: allow}
"""
STRICT = """\
  sh:
    default: allow
    rules:
      - {name: admins-rm, programs: [rm], groups: [admins], action: allow}
      - {name: no-rm, programs: [rm, unlink, shred], action: block, reason: "deleting files: not here"}
      - {name: chmod, programs: [chmod, chown], action: require_approval}
      - {name: systemctl, programs: [systemctl], args: [stop, restart], action: require_approval}
      - {name: secrets, command: "(/etc/shadow|id_rsa)", action: block}
  sql:
    default: allow
    rules:
      - {name: no-unbounded, statements: [delete, update], traits: [no_where], action: block}
      - {name: ddl, statements: [drop, truncate, alter], action: require_approval}
  k8s:
    default: allow
    rules:
      - {name: delete-held, verbs: [delete], action: require_approval}
      - {name: exec-held, api_resources: [pods/exec], action: require_approval}
"""
SHELL = ["ls -la /var/log", "rm -f /tmp/x", "sudo systemctl restart nginx", "grep -r foo /etc | wc -l",
         "chmod 600 ~/.ssh/config", "cat /etc/shadow", "echo a: b; tail -n 50 /var/log/syslog", "df -h"]
SQL = ["SELECT id, name FROM customers WHERE id = 42", "DELETE FROM orders", "UPDATE t SET a = 1 WHERE id = 3",
       "DROP TABLE old_things", "SELECT count(*) FROM orders o JOIN customers c ON c.id = o.customer_id"]
KUBE = [("GET", "/api/v1/namespaces/default/pods"), ("DELETE", "/api/v1/namespaces/default/pods/web-1"),
        ("GET", "/apis/apps/v1/namespaces/prod/deployments/web"), ("POST", "/api/v1/namespaces/default/pods/w/exec"
                                                                   "?command=ls&stdout=true")]
EXECS = [Exec("/usr/bin/ls", ("ls", "-l"), chain=("bash", "sshd"), trusted=True),
         Exec("/usr/bin/rm", ("rm", "-f", "x"), chain=("bash", "sshd"), trusted=True)]


def configs(d: Path) -> tuple[Config, Config]:
    host = asyncssh.generate_private_key("ssh-ed25519")
    hk = " ".join(host.export_public_key().decode().split()[:2])
    out = []
    for name, policies in (("permissive", PERMISSIVE), ("strict", STRICT)):
        ssh = f'kind: ssh, host: 127.0.0.1, user: d, credential: {{private_key_file: c}}, host_key: "{hk}"'
        (d / f"{name}.yaml").write_text(f"""\
host_keys: [k]
database: sqlite:///{d}/bastion.db
recordings_dir: {d}/rec
users: {{alice: {{groups: [ops], authorized_keys: []}}}}
resources:
  web: {{{ssh}, policy: sh}}
  gweb: {{{ssh}, policy: sh, enforce: guard}}
  db: {{kind: postgres, host: 127.0.0.1, database: a, user: a, credential: {{password_file: p}}, policy: sql}}
  k8s: {{kind: kubernetes, server: "https://127.0.0.1:6443", credential: {{token_file: t}}, policy: k8s}}
roles: {{ops: {{groups: [ops], resources: ["*"]}}}}
policies:
{policies}""")
        out.append(load_config(d / f"{name}.yaml", check_files=False))
    return out[0], out[1]


def markers(cfg: Config, res: str, n: int) -> str:
    """Decision ``n`` on ``res`` as the live path marks it (bastion/sessions/hooks.py); ``n`` < 0: one of a few
    texts that repeat, else a text of its own (a distinct file, row, pod or argument)."""
    u = "" if n < 0 else str(n)
    k = abs(n)

    def j(kind: str, text: str, subject: object = None) -> str:
        d = judge(cfg, Judged("S", 0, "alice", res, kind, text, "allow", None, subject=subject,  # type: ignore[arg-type]
                              groups=("ops",)))
        if kind == "exec":
            return f"exec: {d.text}" + ("" if d.action.label == "allow" else f": {d.summary()}")
        return f"{'policy' if kind == 'shell' else kind}: {d.summary()}: {d.text}"

    if res == "web":
        return j("shell", SHELL[k % len(SHELL)] + u)
    if res == "db":
        return j("sql", SQL[k % len(SQL)].replace("orders", f"orders{u}"))
    if res == "k8s":
        method, path = KUBE[k % len(KUBE)]
        req = parse_request(method, path.replace("web", f"web{u}"))
        return j("kube", req.describe(), req)
    ev = EXECS[k % len(EXECS)]
    ev = Exec(ev.exe, (*ev.argv[:-1], ev.argv[-1] + u), chain=ev.chain, trusted=True)
    return j("exec", ev.describe(), ev)


def record(cfg: Config, store: Store, d: Path, sessions: int, per: int, distinct: bool) -> int:
    kinds = {"web": "ssh", "gweb": "ssh", "db": "postgres", "k8s": "kubernetes"}
    cache: dict[tuple[str, int], str] = {}
    total = 0
    for n, res in zip(range(sessions), itertools.cycle(kinds), strict=False):
        sid = f"B{n:06d}"
        path = d / "rec" / f"{sid}.cast"
        store.start_session(sid, user="alice", resource=res, kind=kinds[res], mode="interactive", command=None,
                            client_addr="", node="n", recording_path=path)
        ticks = itertools.count(0, 0.5)
        w = CastWriter(path, 80, 24, title="b", clock=lambda ticks=ticks: float(next(ticks)))
        for i in range(per):
            key = (res, total if distinct else -(i % 16))
            label = cache.get(key) or cache.setdefault(key, markers(cfg, *key))
            w.output(b"some output of the command, as a terminal shows it\r\n" * 4)
            w.marker(label)
            total += 1
        sha = w.close()
        store.end_session(sid, outcome="exited", exit_status=0, message="", sha256=sha, size=path.stat().st_size)
    return total


def measure(sessions: int, per: int, distinct: bool) -> list[object]:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        permissive, strict = configs(d)
        store = Store(permissive.database_url)
        store.migrate()
        total = record(permissive, store, d, sessions, per, distinct)
        t0 = time.perf_counter()
        res = run(store, permissive, strict, since=None)
        wall = time.perf_counter() - t0
    assert res.judged == total and not res.unjudged, (res.judged, total, res.unjudged[:3])
    return ["every text distinct" if distinct else "16 texts per resource, repeated", f"{res.judged:,}",
            f"{len(res.changes):,}", f"{wall:.2f}", f"{res.judged / wall:,.0f}"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--markers", type=int, default=250, help="decisions per session")
    a = ap.parse_args()
    rows = [measure(a.sessions, a.markers, distinct) for distinct in (False, True)]
    print(machine())
    print(table("policy backtest, everything included (store, casts, markers read back, engine, diff); target "
                ">= 10,000/s", ["decisions", "count", "would change", "seconds", "judgements/s"], rows))

if __name__ == "__main__":
    main()
