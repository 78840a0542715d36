"""The metrics foundations of issue 25 without a daemon: the config's ``metrics`` section (its problems name file and
line), the helpers' bounded labels, and the directory of per-process files kept small without losing a count."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, values
from prometheus_client.parser import text_string_to_metric_families

from bastion import metrics
from bastion.config import ConfigError, load_config
from bastion.metrics.files import LockedCollector, Reaper, file_count, prepare
from tests.support.relay_fakes import FakeChannel, FakeEndpoint

BASE = "host_keys: [host_ed25519]\ndatabase: sqlite:///bastion.db\n"


def write(tmp_path: Path, text: str) -> Path:
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text(BASE + text)
    return cfg


def problems(cfg: Path) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    return e.value.problems


def test_metrics_are_off_by_default_and_parse_when_on(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).metrics is None
    (tmp_path / "token").write_text("t0ken\n")
    cfg = load_config(write(tmp_path, "log_format: json\nmetrics:\n  listen: '[::1]:9100'\n  token_file: token\n"))
    assert cfg.metrics is not None and cfg.metrics.address == ("::1", 9100)
    assert cfg.log_format == "json"
    assert load_config(write(tmp_path, "metrics: {}\n")).metrics.address == ("127.0.0.1", 9464)  # type: ignore


@pytest.mark.parametrize("listen", ["9464", "localhost", "127.0.0.1:0", "127.0.0.1:70000", ":9464", "a b:1"])
def test_a_bad_listen_address_names_file_and_line(tmp_path: Path, listen: str) -> None:
    cfg = write(tmp_path, f"metrics:\n  listen: '{listen}'\n")
    [p] = problems(cfg)
    assert p.startswith(f"{cfg}:4: metrics.listen: ") and "HOST:PORT" in p, p


def test_the_ssh_port_is_not_the_metrics_port(tmp_path: Path) -> None:
    cfg = write(tmp_path, "listen: {port: 2222}\nmetrics:\n  listen: 0.0.0.0:2222\n")
    assert problems(cfg) == [f"{cfg}:5: metrics.listen: port 2222 is the SSH port (listen.port): pick another"]


def test_a_missing_token_file_names_file_and_line(tmp_path: Path) -> None:
    cfg = write(tmp_path, "metrics:\n  listen: 127.0.0.1:9464\n  token_file: nowhere/token\n")
    [p] = problems(cfg)
    assert p.startswith(f"{cfg}:5: metrics.token_file: cannot read {tmp_path}/nowhere/token"), p
    (tmp_path / "empty").write_text("\n")
    cfg = write(tmp_path, "metrics: {token_file: empty}\n")
    assert problems(cfg) == [f"{cfg}:3: metrics.token_file: {tmp_path}/empty is empty"]


def test_unreadable_tls_files_and_unknown_keys_are_problems(tmp_path: Path) -> None:
    cfg = write(tmp_path, "metrics:\n  tls: {cert_file: cert.pem, key_file: key.pem}\n  port: 1\n")
    assert problems(cfg) == [f"{cfg}:5: metrics.port: unknown key"]
    cfg = write(tmp_path, "metrics:\n  tls: {cert_file: cert.pem, key_file: key.pem}\n")
    [p] = problems(cfg)
    assert p.startswith(f"{cfg}:4: metrics.tls: cannot load the certificate"), p
    cfg = write(tmp_path, "log_format: xml\n")
    [p] = problems(cfg)
    assert p.startswith(f"{cfg}:3: log_format: "), p


def test_helper_labels_are_bounded() -> None:
    metrics.session_started("ssh", "web")
    metrics.session_ended("ssh", "web", "alice typed rm -rf /")  # not an outcome: counted as other
    metrics.policy_decision("launch-missiles", "no-rm")
    metrics.relayed("sideways", "weird-kind", 10)
    metrics.recording_failed("upload")
    body = generate_latest(metrics.REGISTRY).decode()
    labels = {v for fam in text_string_to_metric_families(body) for s in fam.samples for v in s.labels.values()}
    assert "alice typed rm -rf /" not in labels and "launch-missiles" not in labels and "weird-kind" not in labels
    assert metrics.REGISTRY.get_sample_value("bastion_sessions_ended_total", {"kind": "ssh", "outcome": "other"}) == 1
    assert metrics.REGISTRY.get_sample_value("bastion_relay_bytes_total", {"direction": "out", "kind": "other"}) == 10
    assert metrics.REGISTRY.get_sample_value("bastion_sessions_open", {"kind": "ssh", "resource": "web"}) == 0


def test_dead_processes_are_folded_into_the_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counters and histograms of a reaped process survive in the archive (the sum never goes down); its live
    gauges go; its files go, so the directory does not grow with every connection ever served."""
    folder = tmp_path / "m"
    prepare(folder)
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(folder))
    reg = CollectorRegistry()
    reaper = Reaper(folder)
    for pid in (101, 102):
        monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda pid=pid: pid))  # type: ignore
        c = Counter("t_events", "test", ["kind"], registry=reg if pid == 101 else None)
        g = Gauge("t_open", "test", registry=reg if pid == 101 else None, multiprocess_mode="livesum")
        c.labels("x").inc(pid - 100)
        g.set(1)
    values.close_all_multiprocess_files()
    collector = LockedCollector(folder)

    def read() -> dict[str, float]:
        return {s.name + str(sorted(s.labels.items())): s.value for m in collector.collect() for s in m.samples}

    assert read() == {"t_events_total[('kind', 'x')]": 3.0, "t_open[]": 2.0}
    reaper.dead(101)
    assert read() == {"t_events_total[('kind', 'x')]": 3.0, "t_open[]": 1.0}
    reaper.dead(102)
    assert read() == {"t_events_total[('kind', 'x')]": 3.0}
    assert sorted(os.listdir(folder)) == [".lock", "counter_archive.db"] and file_count(folder) == 1


def test_a_second_daemon_does_not_empty_the_files_of_one_that_runs(tmp_path: Path) -> None:
    import subprocess
    import sys

    prepare(tmp_path / "metrics-2222")  # this process holds it now, as a running daemon does
    other = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                            "from bastion.metrics.files import prepare; prepare(Path(sys.argv[1]))",
                            str(tmp_path / "metrics-2222")], capture_output=True, text=True, timeout=60)
    assert other.returncode != 0 and "belongs to a daemon that is running" in other.stderr
    assert (tmp_path / "metrics-2222" / ".lock").exists()


def test_prepare_refuses_what_is_not_its_own_directory(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "m").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RuntimeError):
        prepare(tmp_path / "m")
    stale = tmp_path / "n"
    stale.mkdir()
    (stale / "counter_1.db").write_bytes(b"x")
    prepare(stale)
    assert sorted(os.listdir(stale)) == [".lock"]  # a previous run's counts are not counted again


def test_the_fast_collector_says_what_the_library_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same series and values as prometheus_client's own MultiProcessCollector, histograms and gauge modes
    included, at a first scrape and after the files grew (new series, new values)."""
    from prometheus_client import Histogram
    from prometheus_client.multiprocess import MultiProcessCollector

    folder = tmp_path / "m"
    prepare(folder)
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(folder))
    ours = LockedCollector(folder)

    def both() -> tuple[set[tuple[str, str, float]], set[tuple[str, str, float]]]:
        def flat(collector: object) -> set[tuple[str, str, float]]:
            reg = CollectorRegistry()
            reg.register(collector)  # type: ignore[arg-type]
            return {(s.name, str(sorted(s.labels.items())), s.value)
                    for fam in text_string_to_metric_families(generate_latest(reg).decode()) for s in fam.samples}
        return flat(ours), flat(MultiProcessCollector(None, str(folder)))

    made = []
    for pid in (201, 202, 203):
        monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda pid=pid: pid))  # type: ignore
        h = Histogram("t_wait_seconds", "test", ["outcome"], buckets=(0.1, 1.0), registry=None)
        s = Gauge("t_open", "test", ["kind"], registry=None, multiprocess_mode="livesum")
        m = Gauge("t_worst", "test", registry=None, multiprocess_mode="livemax")
        h.labels("ok").observe(pid / 1000)
        s.labels("ssh").set(pid % 2)
        m.set(pid)
        made.append((h, s))
    first = both()
    assert first[0] == first[1] and len(first[0]) == 7
    for h, s in made:  # the files grow: values change, series appear
        h.labels("denied").observe(5)
        h.labels("ok").observe(0.05)
        s.labels("postgres").inc()
    again = both()
    assert again[0] == again[1] and again[0] != first[0]
    values.close_all_multiprocess_files()


def test_a_removed_directory_never_stops_the_supervisor(tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "m"
    prepare(folder)
    reaper = Reaper(folder)
    shutil.rmtree(folder)
    reaper.dead(4242)  # logged, not raised
    reaper.settle(wait=True)
    assert reaper.owed == []


def test_a_helper_never_fails_its_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        def observe(self, _: float) -> None:
            raise OSError("the metrics directory is gone")

    monkeypatch.setattr(metrics, "KEYSTROKE_LATENCY", Broken())
    metrics.observe_keystroke(0.001)  # logged once, never raised into the relay
    metrics.observe_keystroke(0.001)


# -- where the bastion counts (issue 25's wiring), each point on its own ---------------------------------------
def sample(name: str, **labels: str) -> float:
    """This process's value of a series (in-process mode: the tests never turn the multiprocess mode on)."""
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_relay_counts_a_brokered_sessions_bytes_and_times_its_keystrokes() -> None:
    from bastion.terminal.relay import Relay

    def now() -> tuple[float, float, float]:
        return (sample("bastion_relay_bytes_total", direction="in", kind="postgres"),
                sample("bastion_relay_bytes_total", direction="out", kind="postgres"),
                sample("bastion_keystroke_latency_seconds_count"))

    relay, ep = Relay(FakeChannel()), FakeEndpoint()
    start = now()
    relay.attach(ep, None)  # an observer, a replay: not a brokered session, not counted
    relay.release()
    relay.from_client(b"ls\r")
    relay.output(ep, b"a b c\r\n")
    relay.detach()
    assert now() == start
    relay.attach(ep, None, kind="postgres", keystrokes=True)
    relay.from_client(b"ls\r")
    relay.from_client(b"x")
    relay.output(ep, b"a b c\r\n")
    relay.say(b"bastion: its own words are not the target's\r\n")
    assert now() == (start[0] + 4, start[1] + 7, start[2] + 2)
    relay.detach()
    relay.attach(ep, None, kind="postgres")  # the exec form: bytes counted, no keystroke timed
    relay.from_client(b"SELECT 1;")
    assert now() == (start[0] + 13, start[1] + 7, start[2] + 2)
    assert ep.written() == b"ls\rls\rxSELECT 1;"


async def test_approvals_are_counted_when_they_leave_pending(tmp_path: Path) -> None:
    from bastion.context import ConnectionContext
    from bastion.oversight.approvals import ApprovalService
    from bastion.store.db import Store
    from policies.engine import Action, Decision

    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    store.migrate()
    service = ApprovalService(store, "n1", roles=lambda: {}, spawn=lambda aw: None, publish=lambda e: None)
    ctx = ConnectionContext("127.0.0.1:1", "bastion")
    ctx.username = "alice"
    d = Decision(Action.REQUIRE_APPROVAL, "chmod-needs-approval", "permissions", "chmod 600 x", approvals=1)
    before = {o: (sample("bastion_approval_requests_ended_total", outcome=o),
                  sample("bastion_approval_wait_seconds_count", outcome=o))
              for o in ("withdrawn", "cancelled", "expired")}
    first = await service.request(ctx, "web", "s1", d)
    assert await service.finish(first.id, "withdrawn", "withdrawn by the requester", "alice")
    assert not await service.finish(first.id, "expired", "too late", "bastion")  # no longer pending: not again
    second = await service.request(ctx, "web", "s2", d)
    await service.cancelled(service.db.cancel_pending(session_id="s2", reason="the session ended"))
    assert second.id != first.id
    for o in ("withdrawn", "cancelled"):
        assert sample("bastion_approval_requests_ended_total", outcome=o) == before[o][0] + 1
        assert sample("bastion_approval_wait_seconds_count", outcome=o) == before[o][1] + 1
    assert sample("bastion_approval_requests_ended_total", outcome="expired") == before["expired"][0]


async def test_a_failed_upload_is_counted_from_the_indexers_exit_status(tmp_path: Path) -> None:
    from bastion.audit.indexing import UPLOAD_FAILED
    from tests.support.audit_worker import audit_worker

    worker = audit_worker(tmp_path, lambda sid: ["sh", "-c", f"exit {sid}"])
    before = sample("bastion_recording_failures_total", op="upload")
    await worker.start()
    try:
        for status in ("1", str(UPLOAD_FAILED)):  # an indexing failure is not an upload's
            worker.indexed.clear()
            await worker.closed(status)
            await asyncio.wait_for(worker.indexed.wait(), 60)
    finally:
        await worker.stop()
    assert sample("bastion_recording_failures_total", op="upload") == before + 1
