"""The metrics endpoint of a running daemon (issue 25): scraped with prometheus_client's own text parser, its health
checks, its bearer token, the connections gauge following a stock ``ssh`` connection, the counters of dead
connection processes kept, and ``/readyz`` following a PostgreSQL store that stops and comes back. And what the
daemon counts while stock clients work through it: sessions by kind and outcome (the open gauge back at 0), policy
decisions by action and rule, an approval and its wait, bytes relayed each way, keystroke latency, and recordings
that could not be written or uploaded."""

from __future__ import annotations

import http.client
import os
import re
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import BastionEnv, own_bastion, start_bastion, stop_bastion
from tests.support.keys import free_port
from tests.support.postgres import PgServer, pg_bin, start_postgres
from tests.support.procs import stop_ssh_client
from tests.support.s3 import S3Server
from tests.support.ssh_client import ssh_argv
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow
TOKEN = "s3cret-scrape-token"
ONE_PROCESS = os.environ.get("BASTION_TEST_PROCESSES") == "one"  # the suite run with processes: one
T = TypeVar("T")


def get(url: str, token: str | None = None, tls: ssl.SSLContext | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10, context=tls) as r:  # noqa: S310 (loopback)
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 30.0) -> T:
    """``check()`` until it returns something truthy (its value), or fail saying ``what`` never happened."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


def samples(base: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """One scrape, parsed by the client library's parser: (sample name, labels) -> value."""
    status, body = get(f"{base}/metrics", TOKEN)
    assert status == 200, body
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(body) for s in fam.samples}


def value(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return scrape.get((name, frozenset(labels.items())))


@contextmanager
def metrics_bastion(base: BastionEnv, d: Path, extra: str = "", database: str | None = None) -> Iterator[
        tuple[BastionEnv, str]]:
    d.mkdir(parents=True, exist_ok=True)
    (d / "token").write_text(TOKEN + "\n")
    port = free_port()
    top = f"metrics: {{listen: '127.0.0.1:{port}', token_file: token}}\n{extra}"
    with own_bastion(base, d, extra_top=top) as env:
        if database is not None:  # the config is read at start: restart on the other store
            stop_bastion(env.proc)
            env.config.write_text(env.config.read_text().replace("sqlite:///state/bastion.db", database))
            env.proc = start_bastion(env.config, env.port, env.log)
        yield env, f"http://127.0.0.1:{port}"


def test_scrape_health_token_and_connections(bastion_env: BastionEnv, tmp_path: Path) -> None:
    with metrics_bastion(bastion_env, tmp_path / "m") as (env, base):
        assert get(f"{base}/healthz") == (200, "ok\n")
        status, body = wait_for("/readyz answers 200", lambda: (lambda r: r if r[0] == 200 else None)(
            get(f"{base}/readyz")))
        assert body.startswith("ready\n") and "listening: yes" in body and "store: ok" in body, body
        status, body = get(f"{base}/metrics")
        assert status == 401, body  # the token is needed
        assert get(f"{base}/metrics", "not-the-token")[0] == 401
        first = samples(base)
        assert value(first, "bastion_connections_open") == 0
        assert value(first, "bastion_store_up") == 1
        assert value(first, "bastion_approval_requests_pending") == 0
        assert value(first, "bastion_recording_failures_total", op="upload") == 0
        assert value(first, "bastion_keystroke_latency_seconds_count") == 0  # defined, zero until someone types
        loop = "daemon" if ONE_PROCESS else "node"
        wait_for("the event-loop lag is measured", lambda: (value(
            samples(base), "bastion_event_loop_lag_seconds_count", process=loop) or 0) > 0)

        held = subprocess.Popen(ssh_argv(env.keys["alice"], env.port, "alice", "web", "--", "sleep 120",
                                         tty=False), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            scrape = wait_for("connections open becomes 1", lambda: (lambda s: s if value(
                s, "bastion_connections_open") == 1 else None)(samples(base)))
            wait_for("its session counted open", lambda: value(
                samples(base), "bastion_sessions_open", kind="ssh", resource="web") == 1)
            if not ONE_PROCESS:  # else the daemon serves it itself
                assert value(scrape, "bastion_processes", kind="connection") == 1
                wait_for("the connection process measures its event loop", lambda: (value(
                    samples(base), "bastion_event_loop_lag_seconds_count", process="connection") or 0) > 0)
        finally:
            stop_ssh_client(held)  # repeated: an idle client can miss one SIGTERM (OpenSSH 9.2's poll loop)
        held = subprocess.Popen(ssh_argv(env.keys["alice"], env.port, "alice", "web", "--", "chmod 600 /nonexistent",
                                         tty=False), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            assert held.stderr is not None and "waiting for approval" in held.stderr.readline()
            scrape = wait_for("a request pending", lambda: (lambda s: s if value(
                s, "bastion_approval_requests_pending") == 1 else None)(samples(base)))
            wait_for("the oldest request ages", lambda: (value(
                samples(base), "bastion_approval_oldest_pending_age_seconds") or 0) > 0)
        finally:
            held.kill()
            held.wait(10)
        wait_for("no request pending once its client is gone", lambda: value(
            samples(base), "bastion_approval_requests_pending") == 0)
        wait_for("the request counted ended (its requester gone)", lambda: sum(
            value(samples(base), "bastion_approval_requests_ended_total", outcome=o) or 0
            for o in ("withdrawn", "cancelled")) == 1)
        # the held session ended when its client went: counted ended, and no longer open
        wait_for("the killed session counted ended", lambda: (lambda s: value(
            s, "bastion_sessions_started_total", kind="ssh", resource="web") == 1 and total(
            s, "bastion_sessions_ended_total", kind="ssh") == 1 and total(s, "bastion_sessions_open") == 0)(
            samples(base)))
        after = wait_for("connections open back to 0", lambda: (lambda s: s if value(
            s, "bastion_connections_open") == 0 and value(s, "bastion_processes", kind="connection") in (0, None)
            else None)(samples(base)))
        if ONE_PROCESS:
            return
        # the dead process's counts stay (folded into the archive), and its own files are gone
        assert (value(after, "bastion_event_loop_lag_seconds_count", process="connection") or 0) > 0
        def pids_with_files() -> set[str]:
            return {f.stem.rsplit("_", 1)[1] for f in (env.dir / "state").glob("metrics-*/*.db")}

        # only the supervisor's and the node process's own files are left, beside the archive
        wait_for("the connection processes' files folded", lambda: len(pids_with_files() - {"archive"}) == 2)
        assert "archive" in pids_with_files() and str(env.proc.pid) in pids_with_files()


Scrape = dict[tuple[str, frozenset[tuple[str, str]]], float]


def total(scrape: Scrape, name: str, **labels: str) -> float:
    """The sum of the ``name`` samples whose labels include ``labels`` (e.g. every outcome of one kind)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in scrape.items() if n == name and want <= ls)


def until(base: str, what: str, check: Callable[[Scrape], bool], timeout: float = 60.0) -> Scrape:
    """Scrape until ``check(scrape)`` holds; that scrape."""
    return wait_for(what, lambda: (lambda s: s if check(s) else None)(samples(base)), timeout)


def alice(env: BastionEnv, *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ssh_argv(env.keys["alice"], env.port, "alice", *words, tty=False), capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.timeout(600)  # a dozen ssh connections on a loaded machine
def test_sessions_decisions_approvals_and_bytes_are_counted(bastion_env: BastionEnv, tmp_path: Path) -> None:
    """Stock ssh clients through the bastion, and each counter moves by what they did: the exec form (allowed,
    blocked, held and approved), an interactive shell typed into, an sftp session; every open session closes."""
    with metrics_bastion(bastion_env, tmp_path / "c") as (env, base):
        before = samples(base)
        assert total(before, "bastion_sessions_started_total") == 0
        out = alice(env, "web", "--", "echo COUNTED-EXEC")
        assert out.returncode == 0 and "COUNTED-EXEC" in out.stdout, out.stderr
        s = until(base, "an exec session counted started and ended", lambda s: value(
            s, "bastion_sessions_ended_total", kind="ssh", outcome="exited") == 1)
        assert value(s, "bastion_sessions_started_total", kind="ssh", resource="web") == 1
        # a live gauge: 0 in the process that carried it, or gone with a connection process that ended
        assert total(s, "bastion_sessions_open") == 0
        assert value(s, "bastion_policy_decisions_total", action="allow", rule="") == 1  # web's default
        assert (value(s, "bastion_relay_bytes_total", direction="out", kind="ssh") or 0) >= len("COUNTED-EXEC\n")

        out = alice(env, "web", "--", "rm -f /tmp/metrics-nothing-here")
        assert out.returncode != 0 and "no-rm" in out.stderr, out.stderr
        s = until(base, "the blocked command counted", lambda s: value(
            s, "bastion_policy_decisions_total", action="block", rule="no-rm") == 1)
        assert value(s, "bastion_sessions_started_total", kind="ssh", resource="web") == 1  # refused: no session

        held = subprocess.Popen(ssh_argv(env.keys["alice"], env.port, "alice", "web", "--", "chmod 600 /nonexistent",
                                         tty=False), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert held.stderr is not None
            line = held.stderr.readline()
            found = re.search(r"request #(\d+)", line)
            assert found is not None, line
            decided = subprocess.run(ssh_argv(env.keys["bob"], env.port, "bob", "approve", found[1], tty=False),
                                     capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
            assert decided.returncode == 0, decided.stderr
            held.wait(120)  # approved: chmod runs (and fails on a file that is not there)
        finally:
            if held.poll() is None:
                held.kill()
                held.wait(10)
        s = until(base, "the approval counted approved, with its wait", lambda s: value(
            s, "bastion_approval_requests_ended_total", outcome="approved") == 1 and value(
            s, "bastion_sessions_ended_total", kind="ssh", outcome="exited") == 2)
        assert value(s, "bastion_approval_wait_seconds_count", outcome="approved") == 1
        assert (value(s, "bastion_approval_wait_seconds_sum", outcome="approved") or 0) > 0
        assert value(s, "bastion_policy_decisions_total", action="require_approval", rule="chmod-needs-approval") == 1

        assert value(s, "bastion_keystroke_latency_seconds_count") == 0  # nobody typed yet
        with Terminal(ssh_argv(env.keys["alice"], env.port, "alice", "web", tty=True), cols=100, rows=30) as t:
            t.wait_for_raw(r"[#$] \Z", timeout=60)
            t.send("echo TYPED-$((6*7))\r")
            t.wait_for(r"TYPED-42", timeout=60)
            until(base, "the shell counted open", lambda s: value(
                s, "bastion_sessions_open", kind="ssh", resource="web") == 1)
            t.send("exit\r")
            assert t.wait_exit(timeout=60) == 0
        s = until(base, "the interactive session counted ended", lambda s: value(
            s, "bastion_sessions_ended_total", kind="ssh", outcome="exited") == 3)
        assert (value(s, "bastion_keystroke_latency_seconds_count") or 0) >= 2  # a chunk per key, or per line
        assert (value(s, "bastion_relay_bytes_total", direction="in", kind="ssh") or 0) >= len("echo TYPED-$((6*7))\r")
        assert (value(s, "bastion_relay_bytes_total", direction="out", kind="ssh") or 0) > 0
        # the shell's lines were judged by web's policy too (the exec form's command once, each typed line once)
        assert (value(s, "bastion_policy_decisions_total", action="allow", rule="") or 0) >= 3

        sftp = subprocess.run(["sftp", "-F", "/dev/null", "-i", str(env.keys["alice"]), "-o", "IdentitiesOnly=yes",
                               "-o", "IdentityAgent=none", "-o", "StrictHostKeyChecking=no", "-o",
                               "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
                               "-P", str(env.port), "-b", "-", "alice+web@127.0.0.1"], input="ls /\n",
                              capture_output=True, text=True, timeout=120)
        assert sftp.returncode == 0, sftp.stderr
        s = until(base, "the sftp session counted as a transfer", lambda s: total(
            s, "bastion_sessions_ended_total", kind="transfer") == 1)
        assert value(s, "bastion_sessions_started_total", kind="transfer", resource="web") == 1
        assert (value(s, "bastion_relay_bytes_total", direction="in", kind="transfer") or 0) > 0
        assert (value(s, "bastion_relay_bytes_total", direction="out", kind="transfer") or 0) > 0

        jumped = subprocess.run(["ssh", "-F", str(jump_config(env, tmp_path)), "-J", "bastion", "web",
                                 "echo JUMPED-$((40+2))"], capture_output=True, text=True, timeout=120,
                                stdin=subprocess.DEVNULL)
        assert jumped.returncode == 0 and "JUMPED-42" in jumped.stdout, jumped.stderr
        s = until(base, "the -J session counted as a jump", lambda s: value(
            s, "bastion_sessions_ended_total", kind="jump", outcome="exited") == 1)
        assert value(s, "bastion_sessions_started_total", kind="jump", resource="web") == 1
        assert (value(s, "bastion_relay_bytes_total", direction="out", kind="jump") or 0) >= len("JUMPED-42\n")
        assert total(s, "bastion_sessions_open") == 0  # every session started has ended
        assert total(s, "bastion_sessions_started_total") == total(s, "bastion_sessions_ended_total") == 5


def jump_config(env: BastionEnv, d: Path) -> Path:
    """``ssh -J bastion web`` as an operator writes it (the inner host key not checked: not what is tested here)."""
    cfg = d / "ssh_config"
    common = (f"  IdentityFile {env.keys['alice']}\n  IdentitiesOnly yes\n  IdentityAgent none\n"
              "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n")
    cfg.write_text(f"Host bastion\n  HostName 127.0.0.1\n  Port {env.port}\n  User alice\n{common}"
                   f"Host web\n  User deploy\n{common}")
    return cfg


@pytest.mark.timeout(400)
def test_recordings_that_fail_are_counted(bastion_env: BastionEnv, tmp_path: Path) -> None:
    """A recording that cannot be written (a file where its directory goes) refuses the session and is counted;
    one that cannot be uploaded (a bucket that does not exist) stays on disk and is counted."""
    from tests.integration.test_s3_recordings import s3_config

    s3 = S3Server(tmp_path / "moto.log")
    try:
        d = tmp_path / "r"
        d.mkdir()
        with metrics_bastion(bastion_env, d, s3_config(d, s3, bucket="never-made")) as (env, base):
            recordings = d / "state" / "recordings"
            recordings.mkdir(parents=True, exist_ok=True)
            year = recordings / time.strftime("%Y", time.gmtime())  # a session id starts with the UTC date
            in_the_way = not year.exists()
            if in_the_way:
                year.write_text("not a directory\n")
                try:
                    out = alice(env, "web", "--", "echo NEVER-RECORDED")
                finally:
                    year.unlink()
                assert out.returncode != 0 and "cannot be recorded" in out.stderr, out.stderr
                until(base, "the write failure counted", lambda s: value(
                    s, "bastion_recording_failures_total", op="write") == 1)
            out = alice(env, "web", "--", "echo RECORDED-NOT-UPLOADED")
            assert out.returncode == 0, out.stderr
            s = until(base, "the upload failure counted", lambda s: value(
                s, "bastion_recording_failures_total", op="upload") == 1, timeout=120)
            assert value(s, "bastion_recording_failures_total", op="write") == (1 if in_the_way else 0)
    finally:
        s3.stop()


def stop_postgres(pg: PgServer) -> None:
    """A fast shutdown (SIGINT to the postmaster: clients are disconnected, not waited for), until it is gone."""
    pidfile = pg.dir / "data" / "postmaster.pid"
    os.kill(int(pidfile.read_text().split()[0]), signal.SIGINT)
    wait_for("postgres stops", lambda: not pidfile.exists())
    pg.proc.wait(30)


def test_tls_endpoint(bastion_env: BastionEnv, tmp_path: Path) -> None:
    """With ``tls``, the endpoint speaks HTTPS with the configured certificate (and nothing in clear)."""
    from bastion.demo.devcerts import make_server_cert

    certs = make_server_cert(tmp_path / "tls")
    tls = f"  tls: {{cert_file: {certs.cert}, key_file: {certs.key}}}\n"
    d = tmp_path / "t"
    d.mkdir()
    port = free_port()
    top = f"metrics:\n  listen: 127.0.0.1:{port}\n{tls}"
    with own_bastion(bastion_env, d, extra_top=top) as env:
        trust = ssl.create_default_context(cafile=str(certs.ca))
        base = f"https://127.0.0.1:{port}"
        assert wait_for("/healthz over TLS", lambda: get(f"{base}/healthz", tls=trust)[0] == 200)
        status, body = get(f"{base}/metrics", tls=trust)  # no token_file: no token needed
        assert status == 200 and "bastion_connections_open" in body
        with pytest.raises(urllib.error.URLError):
            get(f"https://127.0.0.1:{port}/healthz", tls=ssl.create_default_context())  # an untrusted certificate
        with pytest.raises((ConnectionError, urllib.error.URLError, http.client.HTTPException)):
            get(f"http://127.0.0.1:{port}/healthz")
        # killed (-9) and started again at once: it waits for the dying processes to let its files go
        env.proc.send_signal(signal.SIGKILL)
        env.proc.wait(10)
        env.proc = start_bastion(env.config, env.port, env.log)
        assert wait_for("/healthz after a restart", lambda: get(f"{base}/healthz", tls=trust)[0] == 200)


def restart_postgres(pg: PgServer) -> None:
    """Start the stopped server again on its data directory and port (what start_postgres ran)."""
    run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    with open(pg.dir / "log", "ab") as log:
        pg.proc = subprocess.Popen([*run_as, pg_bin("postgres"), "-D", str(pg.dir / "data"), "-p", str(pg.port),
                                    "-k", str(pg.dir / "sock"), "-c", "listen_addresses=127.0.0.1", "-c",
                                    "fsync=off"], stdout=subprocess.DEVNULL, stderr=log)
    wait_for("postgres is back", lambda: subprocess.run(
        [pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(pg.port)], capture_output=True).returncode == 0)


def test_readyz_follows_the_postgres_store(bastion_env: BastionEnv, tmp_path: Path) -> None:
    pg = start_postgres()
    try:
        url = f"postgresql+psycopg://postgres:{pg.password}@127.0.0.1:{pg.port}/postgres"
        cluster = "cluster: {heartbeat_seconds: 0.5, node_expiry_seconds: 30}\n"
        with metrics_bastion(bastion_env, tmp_path / "pg", cluster, database=url) as (env, base):
            body = wait_for("ready on PostgreSQL", lambda: (lambda r: r[1] if r[0] == 200 else None)(
                get(f"{base}/readyz")))
            assert "heartbeat:" in body, body  # a shared store: this node's heartbeat is checked
            stop_postgres(pg)
            body = wait_for("unready without the store", lambda: (lambda r: r[1] if r[0] == 503 else None)(
                get(f"{base}/readyz")))
            assert "FAIL store:" in body, body
            assert get(f"{base}/healthz")[0] == 200  # alive all the same
            assert value(samples(base), "bastion_store_up") == 0  # a scrape still answers
            restart_postgres(pg)
            body = wait_for("ready again once the store is back", lambda: (lambda r: r[1] if r[0] == 200 else None)(
                get(f"{base}/readyz")), timeout=60)
            assert "store: ok" in body
            assert value(samples(base), "bastion_store_up") == 1
            assert env.proc.poll() is None
    finally:
        pg.stop()
