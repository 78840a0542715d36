"""The monitoring files the Ansible role ships (ansible/roles/bastion/files/): the Prometheus alert rules pass
`promtool check rules`, fire on the series they are meant for (`promtool test rules`), and the rules and the Grafana
dashboard name only metrics and labels a real daemon serves, so a rule cannot silently watch a metric that does not
exist. The promtool steps are skipped, saying so, where promtool is not installed (Debian's package `prometheus`);
the names are checked everywhere."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bastion import metrics
from tests.integration.conftest import start_bastion, stop_bastion
from tests.support.keys import free_port
from tests.support.postgres import scratch_database

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "ansible/roles/bastion/files"
RULES = FILES / "prometheus/bastion-alerts.yml"
DASHBOARD = FILES / "grafana/bastion-dashboard.json"
PROMTOOL = shutil.which("promtool") or next(  # scripts/setup --test puts it beside the venv's Python
    (str(p) for p in [Path(sys.executable).parent / "promtool"] if p.is_file()), None)
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install "
                                    "prometheus); the metric names are still checked by the other tests")
TOKEN = "monitoring-test-token"
# what Prometheus adds to every series of a target, and the series it makes up itself for each scrape
TARGET_LABELS = {"instance", "job"}
SYNTHETIC = {"up": set(), "scrape_duration_seconds": set(), "scrape_samples_scraped": set()}
# PromQL (and Grafana) words that are not metric names: functions are told by the "(" after them
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless",
            "inf", "nan"}


# -- what the files ask for ------------------------------------------------------------------------------------
def rule_exprs() -> dict[str, str]:
    doc = yaml.safe_load(RULES.read_text())
    return {r.get("alert") or r["record"]: r["expr"] for g in doc["groups"] for r in g["rules"]}


def dashboard_exprs() -> dict[str, str]:
    doc = json.loads(DASHBOARD.read_text())
    out = {f"{p['title']} {t['refId']}": t["expr"] for p in doc["panels"] for t in p["targets"]}
    for var in doc["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", var["definition"])
            assert m, var["definition"]
            out[f"variable {var['name']}"] = f"group by ({m[2]}) ({m[1]})"
    return out


class Query:
    """A PromQL expression taken apart, just enough to check names: its metric names with the labels each
    selector matches on, and the labels it groups or joins by."""

    def __init__(self, expr: str) -> None:
        e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string values out of the way
        e = re.sub(r"\[[^\]]*\]", " ", e)  # ranges and subqueries: [5m], [30m:1m], [$__rate_interval]
        self.grouping: set[str] = set()
        for m in re.finditer(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", e):
            self.grouping |= {x.strip() for x in m[1].split(",") if x.strip()}
        e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
        self.selectors: list[tuple[str, set[str]]] = []
        for m in re.finditer(r"([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}", e):
            assert m[1], f"a selector without a metric name in {expr!r}"
            self.selectors.append((m[1], set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", m[2]))))
        e = re.sub(r"([a-zA-Z_:][\w:]*)?\s*\{[^}]*\}", " ", e)
        for m in re.finditer(r"(?<![\w.$:])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()", e):
            if m[1].lower() not in KEYWORDS:
                self.selectors.append((m[1], set()))

    @property
    def names(self) -> set[str]:
        return {name for name, _ in self.selectors}


def test_query_parser_finds_names_and_labels() -> None:
    q = Query('histogram_quantile(0.99, sum by (instance, le) (rate(x_bucket{process=~"n.*", job="b"}[5m]))) > 0.1'
              ' and on (instance) min_over_time(max(y)[30m:1m]) > 1e3 unless z offset 5m')
    assert q.names == {"x_bucket", "y", "z"}
    assert q.grouping == {"instance", "le"} and ("x_bucket", {"process", "job"}) in q.selectors


# -- what a daemon serves --------------------------------------------------------------------------------------
def scrape(url: str) -> str:
    req = urllib.request.Request(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 (loopback)
        return str(r.read().decode())


def registry_series() -> dict[str, set[str]]:
    """Every sample name the bastion's metrics can have, with its label names, from the definitions (a labelled
    metric shows no sample before its first use, so a scrape alone would not list it)."""
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",), "info": ("_info",), "summary": ("", "_count",
                "_sum", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}
    out: dict[str, set[str]] = {}
    for collector in list(metrics.REGISTRY._collector_to_names):  # type: ignore[attr-defined]
        labels = set(collector._labelnames)
        for fam in collector.describe():
            for suffix in suffixes[fam.type]:
                out[fam.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, set[str]]]:
    """The series a real daemon serves (on a PostgreSQL store, so the cluster's heartbeat gauge is there too),
    scraped once its event loops have been measured, with the definitions' series added; name -> label names. It
    runs as under the unit, with $RUNTIME_DIRECTORY: the metrics' per-process files go there."""
    d = tmp_path_factory.mktemp("monitoring")
    (d / "state").mkdir()
    (d / "token").write_text(TOKEN + "\n")
    port, mport = free_port(), free_port()
    with scratch_database("bastion_monitoring") as url:
        cfg = d / "bastion.yaml"
        cfg.write_text(f"listen: {{host: 127.0.0.1, port: {port}}}\nhost_keys: [state/host_ed25519]\n"
                       f"database: {url}\nrecordings_dir: state/recordings\nlog_dir: state/logs\n"
                       "cluster: {heartbeat_seconds: 0.5}\n"  # an export sink: its backlog gauge has a sample
                       f"audit: {{export: {{file: [{{name: file, path: {d / 'audit.jsonl'}}}]}}}}\n"
                       f"metrics: {{listen: '127.0.0.1:{mport}', token_file: token}}\n")
        runtime = d / "run"  # what systemd's RuntimeDirectory=bastion gives the daemon (systemd/bastion.service)
        runtime.mkdir(mode=0o700)
        os.environ["RUNTIME_DIRECTORY"] = str(runtime)
        try:
            proc = start_bastion(cfg, port, d / "bastion.out", timeout=60)
        finally:
            del os.environ["RUNTIME_DIRECTORY"]
        try:
            deadline, names = time.monotonic() + 60, set()
            while time.monotonic() < deadline:
                families = list(text_string_to_metric_families(scrape(f"http://127.0.0.1:{mport}")))
                names = {s.name for f in families for s in f.samples}
                if {"bastion_event_loop_lag_seconds_bucket", "bastion_node_heartbeat_age_seconds",
                        "bastion_audit_export_backlog"} <= names:
                    break
                time.sleep(0.2)
            else:
                raise AssertionError(f"the scrape never showed the loop lag, the heartbeat and the export backlog: "
                                     f"{sorted(names)}")
            assert list((runtime / f"metrics-{port}").glob("*.db")), "the per-process files are not in the runtime dir"
        finally:
            stop_bastion(proc)
    out = registry_series()
    for name, labels in SYNTHETIC.items():
        out[name] = set(labels)
    for fam in families:
        for s in fam.samples:
            out.setdefault(s.name, set()).update(s.labels)
    # the definitions and the scrape agree: what the daemon served of the definitions has their labels
    for fam in families:
        for s in fam.samples:
            defined = registry_series().get(s.name)
            assert defined is None or set(s.labels) == defined, (s.name, s.labels, defined)
    yield out


def unknown_names(exprs: dict[str, str], served: dict[str, set[str]]) -> list[str]:
    problems = []
    for where, expr in exprs.items():
        q = Query(expr)
        labels = set(TARGET_LABELS)
        for name, matched in q.selectors:
            if name not in served:
                problems.append(f"{where}: {name} is not a metric the bastion serves")
                continue
            labels |= served[name]
            if matched - served[name] - TARGET_LABELS:
                problems.append(f"{where}: {name} has no label {sorted(matched - served[name])}")
        if q.grouping - labels:
            problems.append(f"{where}: grouped by {sorted(q.grouping - labels)}, a label none of its metrics has")
    return problems


def test_alert_rules_name_only_served_metrics(served: dict[str, set[str]]) -> None:
    exprs = rule_exprs()
    assert {"BastionDown", "BastionApprovalPendingTooLong", "BastionRecordingFailures", "BastionEventLoopLag",
            "BastionNodeHeartbeatLost", "BastionStoreUnreachable"} <= set(exprs)
    assert unknown_names(exprs, served) == []
    used = set().union(*(Query(e).names for e in exprs.values()))
    assert {"bastion_approval_oldest_pending_age_seconds", "bastion_recording_failures_total",
            "bastion_event_loop_lag_seconds_bucket", "up"} <= used


def test_dashboard_names_only_served_metrics(served: dict[str, set[str]]) -> None:
    exprs = dashboard_exprs()
    assert unknown_names(exprs, served) == []
    used = set().union(*(Query(e).names for e in exprs.values()))
    assert {"bastion_connections_open", "bastion_sessions_open", "bastion_policy_decisions_total",
            "bastion_approval_requests_pending", "bastion_approval_oldest_pending_age_seconds",
            "bastion_relay_bytes_total", "bastion_keystroke_latency_seconds_bucket",
            "bastion_event_loop_lag_seconds_bucket"} <= used
    doc = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)) and all(p["datasource"]["uid"] == "${datasource}" for p in doc["panels"])


def test_a_misspelt_metric_is_caught(served: dict[str, set[str]]) -> None:
    """The check itself: a counter named without the _total prometheus_client gives it, a label it does not
    have, and a grouping by a label that is nowhere."""
    problems = unknown_names({"a": "rate(bastion_recording_failures[5m]) > 0",
                              "b": 'bastion_recording_failures_total{kind="x"} > 0',
                              "c": "sum by (user) (bastion_connections_open)"}, served)
    assert len(problems) == 3 and "bastion_recording_failures is not" in problems[0], problems


# -- promtool --------------------------------------------------------------------------------------------------
@needs_promtool
def test_promtool_checks_the_rules() -> None:
    assert PROMTOOL
    out = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rule_exprs())} rules found" in out.stdout


PROMTOOL_TESTS = """
  - interval: 1m
    input_series:
      - series: 'up{job="bastion", instance="n1:9464"}'
        values: '1 1 0 0 0 0 0'
      - series: 'bastion_approval_oldest_pending_age_seconds{job="bastion", instance="n1:9464"}'
        values: '0+60x30'
      - series: 'bastion_approval_oldest_pending_age_seconds{job="bastion", instance="n2:9464"}'
        values: '0+60x30'
      - series: 'bastion_recording_failures_total{job="bastion", instance="n1:9464", op="upload"}'
        values: '0 0 0 0 0 1 1 1'
      - series: 'bastion_recording_failures_total{job="bastion", instance="n1:9464", op="write"}'
        values: '0x7'
      - series: 'bastion_node_heartbeat_age_seconds{job="bastion", instance="n1:9464", node="n2"}'
        values: '1 1 1 61+60x10'
      - series: 'bastion_store_up{job="bastion", instance="n1:9464"}'
        values: '1x10'
    alert_rule_test:
      - {alertname: BastionDown, eval_time: 3m, exp_alerts: []}
      - alertname: BastionDown
        eval_time: 5m
        exp_alerts: [{exp_labels: {severity: critical, job: bastion, instance: "n1:9464"}}]
      - {alertname: BastionApprovalPendingTooLong, eval_time: 15m, exp_alerts: []}
      - alertname: BastionApprovalPendingTooLong
        eval_time: 17m
        exp_alerts: [{exp_labels: {severity: warning}}]
      - {alertname: BastionRecordingFailures, eval_time: 4m, exp_alerts: []}
      - alertname: BastionRecordingFailures
        eval_time: 6m
        exp_alerts: [{exp_labels: {severity: critical, instance: "n1:9464", op: upload}}]
      - alertname: BastionNodeHeartbeatLost
        eval_time: 5m
        exp_alerts: [{exp_labels: {severity: critical, node: n2}}]
      - {alertname: BastionStoreUnreachable, eval_time: 10m, exp_alerts: []}
  - interval: 1m
    input_series:
      # 60 timer samples a minute per process: the node's fire 0.5 s late, the connections' on time
      - series: 'bastion_event_loop_lag_seconds_bucket{job="bastion", instance="n1:9464", process="node", le="0.1"}'
        values: '0x20'
      - series: 'bastion_event_loop_lag_seconds_bucket{job="bastion", instance="n1:9464", process="node", le="1.0"}'
        values: '0+60x20'
      - series: 'bastion_event_loop_lag_seconds_bucket{job="bastion", instance="n1:9464", process="node", le="+Inf"}'
        values: '0+60x20'
      - series: 'bastion_event_loop_lag_seconds_bucket{job="bastion", instance="n1:9464", process="connection",
          le="0.1"}'
        values: '0+60x20'
      - series: 'bastion_event_loop_lag_seconds_bucket{job="bastion", instance="n1:9464", process="connection",
          le="+Inf"}'
        values: '0+60x20'
    alert_rule_test:
      - {alertname: BastionEventLoopLag, eval_time: 5m, exp_alerts: []}
      - alertname: BastionEventLoopLag
        eval_time: 17m
        exp_alerts: [{exp_labels: {severity: warning, instance: "n1:9464", process: node}}]
"""


@needs_promtool
def test_promtool_rules_fire_when_they_should(tmp_path: Path) -> None:
    """`promtool test rules` on made-up series: each alert stays quiet before its threshold and its `for:`, then
    fires with the labels a receiver routes on. (The rules' annotations are left out of this copy: promtool would
    compare their rendered text; `check rules` above checks their templates.)"""
    assert PROMTOOL
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(doc))
    (tmp_path / "tests.yml").write_text("rule_files: [rules.yml]\nevaluation_interval: 1m\ntests:" + PROMTOOL_TESTS)
    out = subprocess.run([PROMTOOL, "test", "rules", "tests.yml"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
