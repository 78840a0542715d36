"""Audit events out, without a daemon: the exported schema (every key, stable bytes, the chain checkable from the
lines alone), RFC 5424 messages and RFC 6587 octet-counting, the journal's native protocol (against a datagram
socket, a big entry through a sealed memfd), the file sink's rotation by size, and ``audit.export:`` problems named
by file and line."""

from __future__ import annotations

import json
import os
import re
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.config import ConfigError, load_config
from bastion.export import journal
from bastion.export.filesink import FileSink
from bastion.export.schema import KEYS, encode, link, shrunk, summary
from bastion.export.syslog import frame, header_field, message, render, unframe
from bastion.store.db import Store

# RFC 5424 6.1: HEADER SP STRUCTURED-DATA [SP MSG]
RFC5424 = re.compile(rb"^<(\d{1,3})>1 (\S+) ([\x21-\x7e]{1,255}) ([\x21-\x7e]{1,48}) ([\x21-\x7e]{1,128}) "
                     rb"([\x21-\x7e]{1,32}) (-|\[.*?\])(?: (.*))?$", re.S)
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)$")


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'b.db'}")
    s.migrate()
    yield s
    s.engine.dispose()


def events(store: Store) -> list[dict[str, Any]]:
    from bastion.export.cursor import events_after

    return events_after(store, 0, 10000)


def check_schema(rec: dict[str, Any]) -> None:
    """What docs/audit-export.md promises of every version 1 event."""
    assert set(rec) == set(KEYS)
    assert rec["schema"] == "bastion.audit" and rec["version"] == 1
    assert isinstance(rec["seq"], int) and rec["seq"] >= 1
    assert re.fullmatch(r"[0-9a-f]{64}", rec["hash"]) and re.fullmatch(r"[0-9a-f]{64}", rec["prev_hash"])
    assert TIMESTAMP.match(rec["time"])
    for k in ("actor", "action", "outcome", "client_addr"):
        assert isinstance(rec[k], str)
    for k in ("resource", "session_id"):
        assert rec[k] is None or isinstance(rec[k], str)
    assert isinstance(rec["detail"], dict) and rec["truncated"] in (True, False)


def test_an_event_exports_every_key_and_its_hash_checks_from_the_line_alone(store: Store) -> None:
    h1 = store.audit("alice", "session.start", "ok", resource="web", session_id="s1", client_addr="10.0.0.1",
                     command="ls -l", n=3)
    h2 = store.audit("bob", "approval.decision", "deny", reason="no \u00e9t\u00e9 \u2603", nested={"a": [1, 2.5]})
    recs = events(store)
    assert [r["hash"] for r in recs] == [h1, h2] and [r["seq"] for r in recs] == [1, 2]
    for r in recs:
        check_schema(r)
        line = encode(r)
        assert line.isascii() and "\n" not in line and encode(json.loads(line)) == line
        assert link(json.loads(line)) == r["hash"]  # a receiver checks the event from the line alone
    assert recs[1]["prev_hash"] == recs[0]["hash"]
    assert recs[0]["detail"] == {"command": "ls -l", "n": 3} and recs[0]["client_addr"] == "10.0.0.1"
    altered = json.loads(encode(recs[1])) | {"outcome": "approve"}
    assert link(altered) != recs[1]["hash"]  # an altered event shows


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path_factory.mktemp('h') / 'b.db'}")
    s.migrate()
    yield s
    s.engine.dispose()


@settings(max_examples=80, deadline=None)
@given(actor=st.text(min_size=1, max_size=40), detail=st.dictionaries(
    st.text(max_size=10), st.one_of(st.text(max_size=30), st.integers(), st.booleans(), st.none(),
                                    st.floats(allow_nan=False, allow_infinity=False),
                                    st.lists(st.text(max_size=5), max_size=3)), max_size=4))
def test_any_event_round_trips_through_its_line_and_still_checks(shared_store: Store, actor: str,
                                                                   detail: dict[str, Any]) -> None:
    from bastion.export.cursor import events_after, head_seq

    h = shared_store.audit(actor, "x.y", "ok", d=detail)
    (rec,) = events_after(shared_store, head_seq(shared_store) - 1, 1)
    back = json.loads(encode(rec))
    assert back == rec and link(back) == h and encode(back).isascii()


def test_a_too_big_event_is_shrunk_to_the_limit_and_says_so(store: Store) -> None:
    store.audit("alice", "command.run", "ok", text="x" * 5000)
    (rec,) = events(store)
    assert shrunk(rec, 10000) == encode(rec)
    small = json.loads(shrunk(rec, 1000))
    assert len(shrunk(rec, 1000)) <= 1000 and small["truncated"] is True
    assert small["detail"] == {"bytes": len(encode(rec["detail"]))} and small["hash"] == rec["hash"]
    check_schema(small)


def test_syslog_messages_are_rfc5424_with_the_json_line_as_msg(store: Store) -> None:
    store.audit("alice", "command.block", "blocked", resource="web", text="rm -rf /")
    store.audit("alice", "session.start", "ok")
    for rec, sev in zip(events(store), (4, 6), strict=True):
        msg = render(rec, facility=10, hostname="bastion a", app_name="bastion", max_message=8192)
        m = RFC5424.match(msg)
        assert m, msg
        pri, ts, host, app, _, msgid, sd, body = m.groups()
        assert int(pri) == 10 * 8 + sev and host == b"bastiona" and app == b"bastion" and sd == b"-"
        assert msgid == rec["action"].encode() and TIMESTAMP.match(ts.decode()) and ts.endswith(b"Z")
        assert json.loads(body) == rec


def test_a_syslog_message_keeps_to_max_message(store: Store) -> None:
    store.audit("alice", "command.run", "ok", text="y" * 20000)
    (rec,) = events(store)
    msg = render(rec, facility=4, hostname="h", app_name="bastion", max_message=2048)
    assert len(msg) <= 2048 and json.loads(RFC5424.match(msg).group(8))["truncated"] is True  # type: ignore[union-attr]


@given(st.text(max_size=300), st.integers(1, 300))
def test_header_fields_are_printable_ascii_without_spaces(value: str, limit: int) -> None:
    out = header_field(value, limit)
    assert out == "-" or (1 <= len(out) <= limit and all(33 <= ord(c) <= 126 for c in out))
    msg = message(13, "", value, value, value, value, "m")
    assert msg.count(b" ") == 7 and RFC5424.match(msg)  # six header fields, structured data, then MSG


@given(st.lists(st.binary(max_size=200), max_size=8), st.data())
def test_octet_counting_frames_split_anywhere_come_back_whole(msgs: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frame(m) for m in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    got: list[bytes] = []
    rest = b""
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out, rest = unframe(rest + stream[a:b])
        got += out
    assert got == msgs and rest == b""
    assert frame(b"abc") == b"3 abc" and frame("é".encode()) == b"2 \xc3\xa9"  # bytes, not characters


@given(st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,20}", fullmatch=True), st.binary(max_size=100),
                       max_size=6))
def test_journal_fields_round_trip_newlines_and_binary_included(fields: dict[str, bytes]) -> None:
    data = b"".join(journal.field(k, v) for k, v in fields.items())
    assert journal.parse(data) == fields


@pytest.fixture()
def journald(tmp_path: Path) -> Iterator[socket.socket]:
    """A stand-in for journald: a datagram socket at a path (the real one is tested in the integration tests)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "journal.sock"))
    sock.settimeout(5)
    yield sock
    sock.close()


def receive(sock: socket.socket) -> dict[str, bytes]:
    """One entry, inline or (as journald accepts it) in a sealed memfd passed by descriptor."""
    data, fds, _, _ = socket.recv_fds(sock, 1 << 20, 1)
    if fds:
        assert not data
        import fcntl

        seals = fcntl.fcntl(fds[0], fcntl.F_GET_SEALS)
        assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SHRINK and seals & fcntl.F_SEAL_GROW
        size = os.fstat(fds[0]).st_size
        data = os.pread(fds[0], size, 0)
        os.close(fds[0])
    return journal.parse(data)


def test_journal_entries_carry_structured_fields_and_the_json_line(store: Store, journald: socket.socket) -> None:
    store.audit("alice", "command.block", "blocked", resource="web", session_id="s1", text="a\nb")
    store.audit("bob", "login", "ok", big="z" * 300000)  # over a datagram's size: sent in a memfd
    sink = journal.JournalSink(journald.getsockname(), "bastion", 5)
    recs = events(store)
    sink.send(recs)
    for rec, prio in zip(recs, (b"4", b"6"), strict=True):
        f = receive(journald)
        assert f["PRIORITY"] == prio and f["SYSLOG_IDENTIFIER"] == b"bastion"
        assert f["BASTION_SEQ"] == str(rec["seq"]).encode() and f["BASTION_HASH"] == rec["hash"].encode()
        assert f["BASTION_ACTION"] == rec["action"].encode() and f["BASTION_VERSION"] == b"1"
        assert json.loads(f["BASTION_EVENT"]) == rec and f["MESSAGE"] == summary(rec).encode()
    sink.close()


def test_journal_without_its_socket_fails_and_says_why(tmp_path: Path, store: Store) -> None:
    from bastion.export.sinks import DeliveryError

    store.audit("a", "b", "ok")
    with pytest.raises(DeliveryError, match="not running under systemd"):
        journal.JournalSink(str(tmp_path / "none.sock"), "bastion", 1).send(events(store))


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_the_file_sink_rotates_by_size_and_keeps_n_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = FileSink(path, max_bytes=1024, keep=3)
    written = [json.dumps({"n": i, "pad": "p" * 90}) for i in range(40)]  # ~100 bytes each: ~4 files' worth
    for i in range(0, 40, 7):
        sink.write(written[i:i + 7])
    files = [path.with_name(f"audit.jsonl.{i}") for i in (3, 2, 1)] + [path]
    assert all(f.exists() for f in files) and not path.with_name("audit.jsonl.4").exists()
    assert all(f.stat().st_size <= 1024 for f in files)
    kept = [ln for f in files for ln in lines_of(f)]
    assert kept == written[-len(kept):] and len(kept) >= 30  # the newest, in order; the oldest rotated away
    assert all(f.stat().st_size > 1024 - 110 for f in files[:-1])  # each rotated file was full


def test_one_line_bigger_than_max_bytes_gets_a_file_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    sink = FileSink(path, max_bytes=1024, keep=2)
    sink.write(["small"])
    sink.write(["x" * 3000, "after"])
    assert lines_of(path.with_name("a.jsonl.2")) == ["small"]
    assert lines_of(path.with_name("a.jsonl.1")) == ["x" * 3000] and lines_of(path) == ["after"]


def test_a_line_torn_by_a_crash_is_cut_before_the_next_write(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"seq":1}\n{"seq":2}\n{"se')
    FileSink(path, max_bytes=1 << 20, keep=1).write(['{"seq":3}'])
    assert lines_of(path) == ['{"seq":1}', '{"seq":2}', '{"seq":3}']
    path.write_text('{"torn')
    FileSink(path, max_bytes=1 << 20, keep=1).write(['{"seq":4}'])
    assert lines_of(path) == ['{"seq":4}']


BASE = """\
listen: {host: 127.0.0.1, port: 2222}
host_keys: [host_key]
database: sqlite:///bastion.db
recordings_dir: rec
resources: {}
"""


def export_config(tmp_path: Path, text: str) -> Any:
    from bastion.config.export import export_problems
    from bastion.config.problems import problem

    p = tmp_path / "bastion.yaml"
    p.write_text(BASE + text)
    cfg = load_config(p, check_files=False)
    problems = [problem(cfg.path, cfg.lines, loc, msg) for loc, msg in export_problems(cfg)]
    if problems:
        raise ConfigError(problems)
    return cfg


GOOD = """\
audit:
  export:
    file:
      - {name: local, path: audit.jsonl, max_bytes: 4096, keep: 3}
    syslog:
      - {name: siem, host: 127.0.0.1, port: 6514, transport: tcp, facility: local3}
      - {name: siem-udp, host: 127.0.0.1, transport: udp}
    journal:
      - {name: journal}
    delivery: {poll: 0.2, backoff: 0.1, max_backoff: 1, timeout: 2, lease: 5}
"""


def test_a_good_export_config_loads(tmp_path: Path) -> None:
    x = export_config(tmp_path, GOOD).audit.export
    assert [s.name for s in x.sinks()] == ["local", "siem", "siem-udp", "journal"]
    assert x.syslog[1].port == 514 and x.syslog[0].facility == "local3" and x.file[0].start == "all"
    assert x.journal[0].socket == "/run/systemd/journal/socket" and x.delivery.poll == 0.2


@pytest.mark.parametrize(("change", "expected"), [
    (("name: siem-udp", "name: local"), r"bastion.yaml:12: audit.export.syslog\[1\].name: sink name 'local' is "
                                        r"used twice"),
    (("transport: tcp", "transport: tls"), r"bastion.yaml:11: audit.export.syslog\[0\].transport: Input should be"),
    (("path: audit.jsonl", "path: nowhere/audit.jsonl"), r"bastion.yaml:9: audit.export.file\[0\].path: no "
                                                          r"directory .*nowhere"),
    (("max_bytes: 4096", "max_bytes: 10"), r"bastion.yaml:9: audit.export.file\[0\].max_bytes: "),
    (("lease: 5", "lease: 1"), r"bastion.yaml:15: audit.export.delivery: .*lease must be longer than timeout"),
    (("{name: journal}", "{name: journal, sokcet: /x}"), r"bastion.yaml:14: audit.export.journal\[0\].sokcet: "
                                                        r"unknown key"),
])
def test_export_config_problems_name_the_file_and_line(tmp_path: Path, change: tuple[str, str],
                                                       expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        export_config(tmp_path, GOOD.replace(*change))


def test_the_struct_of_a_binary_journal_field() -> None:
    assert journal.field("A", "x\ny") == b"A\n" + struct.pack("<Q", 3) + b"x\ny\n"
    assert journal.field("A", "xy") == b"A=xy\n"
