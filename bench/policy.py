"""Policy decisions per second: shell lines (parsed like a shell would), SQL (pglast, every nested statement) and
Kubernetes requests, against a policy of realistic size. The judge runs once per command line at Enter, per SQL
statement and per API request, so this bounds how many of those one core can take.

    .venv/bin/python bench/policy.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import machine, table  # noqa: E402

from bastion.config import load_config  # noqa: E402
from policies.engine import evaluate, evaluate_kube, evaluate_sql  # noqa: E402
from policies.kube import parse_request  # noqa: E402
from policies.sqlmask import Catalog, Relation, analyze  # noqa: E402

CONFIG = """\
host_keys: [k]
policies:
  shell:
    default: allow
    rules:
      - {name: admins-rm, programs: [rm], groups: [admins], action: allow}
      - {name: no-rm, programs: [rm, unlink, shred], action: block}
      - {name: no-dd, programs: [dd, mkfs*], action: block}
      - {name: systemctl, programs: [systemctl], args: [stop, restart, disable], action: require_approval}
      - {name: chmod, programs: [chmod, chown, chgrp], action: require_approval}
      - {name: curl-post, programs: [curl], args: ["-X*", "--data*", "-d"], action: warn}
      - {name: iptables, programs: [iptables, nft], action: block}
      - {name: kill-init, programs: [kill, pkill], args: ["1", "-9"], action: require_approval}
      - {name: secrets, command: "(/etc/shadow|id_rsa|\\\\.pem)", action: block}
      - {name: reboot, programs: [reboot, shutdown, halt, poweroff], action: block}
  sql:
    default: allow
    rules:
      - {name: no-drop, statements: [drop, truncate], action: require_approval}
      - {name: unbounded, traits: [no_where], action: block}
      - {name: ssn, tables: [customers], statements: [update, delete], action: require_approval}
      - {name: copy-program, traits: [copy_program], action: block}
      - {name: grants, statements: [grant, revoke, alter], action: require_approval}
  kube:
    default: allow
    rules:
      - {name: no-secrets, api_resources: [secrets], action: block}
      - {name: delete, verbs: [delete], action: require_approval}
      - {name: exec, api_resources: [pods/exec, pods/attach], action: require_approval}
      - {name: prod, namespaces: [prod], verbs: [create, update, patch], action: require_approval}
"""
SHELL = ["ls -la /var/log", "tail -n 100 /var/log/syslog | grep -i error", "sudo systemctl restart nginx",
         "rm -rf /tmp/build && make -j4", "for f in *.log; do gzip \"$f\"; done", "cat /etc/shadow",
         "kubectl get pods -A | awk '{print $1}' | sort | uniq -c", "echo $(date) >> notes.txt",
         "find . -name '*.pyc' -delete", "curl -s https://example.invalid/health"]
SQL = ["SELECT * FROM customers WHERE id = 42", "UPDATE orders SET status = 'x' WHERE id = 7",
       "DELETE FROM sessions", "WITH a AS (SELECT id FROM t) SELECT * FROM a JOIN b USING (id)",
       "DROP TABLE audit_old", "INSERT INTO t (a, b) VALUES (1, 2), (3, 4)",
       "SELECT count(*) FROM pg_stat_activity; SELECT now()", "COPY t TO PROGRAM 'sh'"]
KUBE = [("GET", "/api/v1/namespaces/default/pods"), ("GET", "/api/v1/namespaces/default/secrets/db"),
        ("DELETE", "/api/v1/namespaces/default/pods/web-1"), ("GET", "/apis/apps/v1/namespaces/prod/deployments"),
        ("PATCH", "/apis/apps/v1/namespaces/prod/deployments/api"),
        ("GET", "/api/v1/namespaces/default/pods/web-1/exec?command=sh&stdin=true&tty=true")]


# a catalog like the one the wire proxy reads at connect: customers.ssn masked, a few other relations
CATALOG = Catalog({name: Relation(cols, frozenset(masked)) for name, cols, masked in (
    ("customers", ("id", "name", "email", "ssn"), {"ssn"}), ("orders", ("id", "customer_id", "status", "total"), ()),
    ("t", ("id", "a", "b"), ()), ("a", ("id", "x"), ()), ("b", ("id", "y"), ()), ("sessions", ("id", "user"), ()),
    ("audit_old", ("id",), ()), ("pg_stat_activity", ("pid", "query"), ()))},
    frozenset({"count", "now", "lower", "upper", "sum", "coalesce"}))


def sql_with_lineage(policy, text: str, **kw) -> None:  # noqa: ANN001
    """What the wire proxy does per Query on a resource with masking: the policy, then the lineage."""
    from pglast import parse_sql

    if evaluate_sql(policy, text, **kw).action.label == "block":
        return
    for rs in parse_sql(text):
        analyze(rs.stmt, CATALOG)


def rate(fn, items, seconds: float) -> float:  # noqa: ANN001
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for it in items:
            fn(it)
        n += len(items)
    return n / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "b.yaml"
        f.write_text(CONFIG)
        pol = load_config(f, check_files=False).policies
    kw = {"groups": ["ops"], "resource": "prod-1"}
    rows = [
        ("shell lines", rate(lambda s: evaluate(pol["shell"], s, **kw), SHELL, args.seconds)),
        ("SQL strings", rate(lambda s: evaluate_sql(pol["sql"], s, **kw), SQL, args.seconds)),
        ("SQL strings, masking lineage on", rate(lambda s: sql_with_lineage(pol["sql"], s, **kw), SQL,
                                                 args.seconds)),
        ("Kubernetes requests (parse + judge)",
         rate(lambda r: evaluate_kube(pol["kube"], parse_request(*r), **kw), KUBE, args.seconds)),
    ]
    print(table(f"Policy decisions, one core, on {machine()}", ["input", "decisions/s", "µs each"],
                [(name, f"{r:,.0f}", f"{1e6 / r:.0f}") for name, r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
