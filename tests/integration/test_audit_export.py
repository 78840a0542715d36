"""Audit events out, end to end: events made through the stock OpenSSH client reach a syslog receiver on loopback
(RFC 5424 over TCP with octet-counting, and over UDP), a size-rotated file and a journal socket, each in the
documented schema with a hash that checks; a TCP receiver away for 30 s while the daemon restarts gets every
event once it is back (the cursor); `bastion audit export` replays history; two nodes sharing a PostgreSQL store
export a sink once, and the other goes on when the exporter stops; and the real systemd journal, where there is
one."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bastion.export import journal
from bastion.export.cursor import events_after
from bastion.store.db import Store
from tests.integration.conftest import BastionEnv, start_bastion, stop_bastion, write_config
from tests.support.keys import free_port
from tests.support.ssh_client import ssh_argv
from tests.support.syslog_receiver import SyslogReceiver, chain_hash, event_problems

pytestmark = pytest.mark.slow
DOWN = 30.0  # seconds the syslog receiver is away
FAST = "    delivery: {poll: 0.2, backoff: 0.2, max_backoff: 1, timeout: 2, lease: 3, batch: 50}\n"
JOURNAL_SOCKET = "/run/systemd/journal/socket"


def wait(cond: Callable[[], bool], timeout: float = 30, why: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, why
        time.sleep(0.1)


def run(env: BastionEnv, user: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ssh_argv(env.keys[user], env.port, user, "web", "--", command, tty=False),
                          capture_output=True, text=True, timeout=60)


def some_events(env: BastionEnv, tag: str) -> None:
    """A session that runs, and one whose command is blocked (each several audit events)."""
    assert run(env, "alice", f"echo {tag}").returncode == 0
    assert run(env, "alice", f"rm -f /tmp/{tag}").returncode != 0


def chain(store: Store) -> list[dict[str, Any]]:
    return events_after(store, 0, 100000)


class Journald:
    """A stand-in for journald on a socket path of the test's own (the daemon's journal sink is pointed at it)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.entries: list[dict[str, bytes]] = []
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, 1 << 20, 1)
            except OSError:
                return
            if fds:
                data = os.pread(fds[0], os.fstat(fds[0]).st_size, 0)
                os.close(fds[0])
            self.entries.append(journal.parse(data))

    def close(self) -> None:
        self.sock.close()


def export_config(d: Path, tcp: SyslogReceiver, udp: SyslogReceiver, journal_sock: Path) -> str:
    return f"""\
audit:
  export:
    file:
      - {{name: file, path: {d}/export/audit.jsonl, max_bytes: 1024, keep: 1000}}
    syslog:
      - {{name: siem, host: 127.0.0.1, port: {tcp.port}, transport: tcp, facility: local4}}
      - {{name: siem-udp, host: 127.0.0.1, port: {udp.port}, transport: udp}}
    journal:
      - {{name: journal, socket: {journal_sock}}}
{FAST}"""


def file_lines(d: Path) -> list[dict[str, Any]]:
    """Every line of the file sink, oldest file first."""
    files = sorted(d.glob("audit.jsonl.[0-9]*"), key=lambda p: -int(p.suffix[1:])) + [d / "audit.jsonl"]
    return [json.loads(ln) for f in files if f.exists() for ln in f.read_text().splitlines()]


def assert_complete(events: list[dict[str, Any]], store_events: list[dict[str, Any]]) -> None:
    """Every event of the store arrived (at least once), in the schema, its hash checking and chained."""
    assert [p for e in events for p in event_problems(e)] == []
    got = {e["seq"]: e for e in events}
    assert sorted(got) == [e["seq"] for e in store_events]
    assert [got[e["seq"]] for e in store_events] == store_events
    for prev, e in zip(store_events, store_events[1:], strict=False):
        assert e["prev_hash"] == prev["hash"] and chain_hash(e) == e["hash"]


@pytest.fixture()
def receivers(tmp_path: Path) -> Iterator[tuple[SyslogReceiver, SyslogReceiver, Journald]]:
    tcp, udp = SyslogReceiver("tcp"), SyslogReceiver("udp")
    tcp.start()
    udp.start()
    jd = Journald(tmp_path / "journal.sock")
    try:
        yield tcp, udp, jd
    finally:
        tcp.stop()
        udp.stop()
        jd.close()


def test_a_syslog_receiver_down_30s_across_a_daemon_restart_gets_every_event(
        bastion_env: BastionEnv, tmp_path: Path, receivers: tuple[SyslogReceiver, SyslogReceiver, Journald]) -> None:
    tcp, udp, jd = receivers
    (tmp_path / "state").mkdir()
    (tmp_path / "export").mkdir()
    port = free_port()
    cfg = write_config(tmp_path, port, bastion_env.keys, bastion_env.target, bastion_env.target_key,
                       extra_top=export_config(tmp_path, tcp, udp, tmp_path / "journal.sock"))
    log = tmp_path / "bastion.out"
    env = BastionEnv(tmp_path, cfg, port, bastion_env.keys, bastion_env.target, bastion_env.target_key,
                     start_bastion(cfg, port, log), log)
    store = Store(f"sqlite:///{tmp_path / 'state' / 'bastion.db'}")
    try:
        some_events(env, "before")
        head = chain(store)
        tcp.wait(lambda r: r.hashes() >= {e["hash"] for e in head}, why="the first events did not arrive")
        assert_complete(tcp.events, head)

        tcp.stop()  # the receiver goes away for 30 s; meanwhile events, and a daemon restart
        down = time.monotonic()
        some_events(env, "during1")
        stop_bastion(env.proc)
        env.proc = start_bastion(cfg, port, log)
        some_events(env, "during2")
        wait(lambda: "audit export siem:" in log.read_text() and "not sent" in log.read_text(),
             why="no failed attempt logged")
        while time.monotonic() - down < DOWN:
            assert env.proc.poll() is None
            time.sleep(0.5)
        assert env.bastion("audit", "export", "--status").stdout.count("ConnectionRefusedError") == 1
        tcp.start()
        everything = chain(store)
        tcp.wait(lambda r: r.hashes() >= {e["hash"] for e in everything}, timeout=30,
                 why="not every event arrived after the outage")
        assert_complete(tcp.events, everything)
        assert all(h[3] == b"bastion" and int(h[0]) // 8 == 20 for h in tcp.headers)  # app, facility local4
        assert any(int(h[0]) % 8 == 4 for h in tcp.headers) and any(int(h[0]) % 8 == 6 for h in tcp.headers)

        # the other sinks have it all too: UDP (never down), the rotated file, the journal socket
        everything = chain(store)
        udp.wait(lambda r: r.hashes() >= {e["hash"] for e in everything}, why="UDP")
        assert_complete(udp.events, everything)
        wait(lambda: len({e["seq"] for e in file_lines(tmp_path / "export")}) >= len(everything), why="file")
        assert_complete(file_lines(tmp_path / "export"), everything)
        rotated = list((tmp_path / "export").glob("audit.jsonl.[0-9]*"))
        assert len(rotated) >= 3, rotated  # rotated by size: none over it but a file of one bigger line
        assert all(p.stat().st_size <= 1024 or len(p.read_text().splitlines()) == 1 for p in rotated)
        wait(lambda: len({e["BASTION_SEQ"] for e in jd.entries}) >= len(everything), why="journal")
        assert_complete([json.loads(e["BASTION_EVENT"]) for e in jd.entries], everything)
        blocked = next(e for e in jd.entries if e["BASTION_OUTCOME"] in (b"block", b"blocked"))
        assert blocked["PRIORITY"] == b"4" and blocked["BASTION_RESOURCE"] == b"web"

        status = json.loads(env.bastion("audit", "export", "--status", "--json").stdout)
        head_seq = everything[-1]["seq"]
        assert {s["sink"]: (s["kind"], s["last_error"]) for s in status} == {
            "file": ("file", None), "siem": ("syslog", None), "siem-udp": ("syslog", None),
            "journal": ("journal", None)}
        assert all(s["seq"] >= head_seq and s["holder"] for s in status)
        assert "Traceback" not in log.read_text()
        replay(env, tcp, everything)
    finally:
        stop_bastion(env.proc)
        store.engine.dispose()


def replay(env: BastionEnv, tcp: SyslogReceiver, everything: list[dict[str, Any]]) -> None:
    """`bastion audit export` sends history again: to a file, to stdout, into a configured sink."""
    out = env.dir / "replay.jsonl"
    r = env.bastion("audit", "export", "--from-seq", "1", "--to-file", str(out))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert lines[:len(everything)] == everything
    r = env.bastion("audit", "export", "--since", "1h", "--to-file", "-")
    assert [json.loads(ln) for ln in r.stdout.splitlines()][:len(everything)] == everything
    before = len(tcp.events)
    r = env.bastion("audit", "export", "--from-seq", str(everything[-3]["seq"]), "--sink", "siem")
    assert r.returncode == 0 and "exported" in r.stderr, r.stderr
    tcp.wait(lambda t: len(t.events) >= before + 3, why="the replay did not arrive")
    assert [e["seq"] for e in tcp.events[before:before + 3]] == [e["seq"] for e in everything[-3:]]
    r = env.bastion("audit", "export", "--sink", "nope", "--since", "1h")
    assert r.returncode == 2 and "no sink 'nope'" in r.stderr
    assert env.bastion("audit", "export").returncode == 2  # neither --since nor --from-seq: refused


@pytest.mark.skipif(not os.path.exists(JOURNAL_SOCKET) or shutil.which("journalctl") is None,
                    reason=f"no systemd journal here ({JOURNAL_SOCKET} or journalctl missing): the journal sink is "
                           "tested against a socket of the test's own instead")
def test_events_reach_the_real_systemd_journal_with_structured_fields(bastion_env: BastionEnv,
                                                                      tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    port = free_port()
    ident = f"bastion-test-{port}"
    extra = f"audit:\n  export:\n    journal:\n      - {{name: journal, identifier: {ident}}}\n{FAST}"
    cfg = write_config(tmp_path, port, bastion_env.keys, bastion_env.target, bastion_env.target_key,
                       extra_top=extra)
    log = tmp_path / "bastion.out"
    proc = start_bastion(cfg, port, log)
    store = Store(f"sqlite:///{tmp_path / 'state' / 'bastion.db'}")
    try:
        env = BastionEnv(tmp_path, cfg, port, bastion_env.keys, bastion_env.target, bastion_env.target_key, proc,
                         log)
        some_events(env, "journal")
        everything = chain(store)

        def entries() -> list[dict[str, Any]]:
            out = subprocess.run(["journalctl", "-o", "json", f"SYSLOG_IDENTIFIER={ident}"], capture_output=True,
                                 text=True, timeout=30).stdout
            return [json.loads(ln) for ln in out.splitlines() if ln.strip()]

        wait(lambda: len(entries()) >= len(everything), why="not every event is in the journal")
        got = entries()
        assert_complete([json.loads(e["BASTION_EVENT"]) for e in got], everything)
        assert {e["BASTION_SEQ"] for e in got} >= {str(e["seq"]) for e in everything}
    finally:
        stop_bastion(proc)
        store.engine.dispose()
