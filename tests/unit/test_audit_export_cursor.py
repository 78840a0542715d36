"""Each sink's cursor and lease in the store, and the export loop: one holder per sink, the cursor moved only by
its holder and only forward from where it was, a lease that expires into another exporter's hands, ``start: new``,
and a sink that fails then recovers getting every event in order (at least once)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from bastion.config import Config, load_config
from bastion.export import cursor
from bastion.export.sinks import DeliveryError
from bastion.export.worker import Exporter
from bastion.store.db import Store


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'b.db'}")
    s.migrate()
    yield s
    s.engine.dispose()


def test_one_holder_per_sink_and_only_it_moves_the_cursor(store: Store) -> None:
    for i in range(5):
        store.audit("a", f"x{i}", "ok")
    a, b = cursor.new_token(), cursor.new_token()
    held = cursor.claim(store, "siem", a, "node-a", 30)
    assert held is not None and held.seq == 0
    assert cursor.claim(store, "siem", b, "node-b", 30) is None  # taken
    assert cursor.claim(store, "other", b, "node-b", 30) is not None  # sinks are independent
    evs = cursor.events_after(store, held.seq, 3)
    assert [e["seq"] for e in evs] == [1, 2, 3]
    assert not cursor.advance(store, cursor.Held("siem", b, 0), 3, 3, 30)  # not the holder
    assert cursor.advance(store, held, 3, 3, 30)
    assert not cursor.advance(store, held, 5, 2, 30)  # a stale view (seq was 0, is 3): refused
    again = cursor.claim(store, "siem", a, "node-a", 30)
    assert again is not None and again.seq == 3
    cursor.release(store, [a])
    taken = cursor.claim(store, "siem", b, "node-b", 30)
    assert taken is not None and taken.seq == 3  # released: the next exporter goes on from the cursor
    (row,) = [r for r in cursor.status(store, ["siem"]) if r.sink == "siem"]
    assert (row.seq, row.behind, row.exported, row.holder) == (3, 2, 3, "node-b")


def test_a_lease_that_runs_out_passes_to_another_exporter(store: Store) -> None:
    a, b = cursor.new_token(), cursor.new_token()
    assert cursor.claim(store, "siem", a, "node-a", 0.2) is not None
    assert cursor.claim(store, "siem", b, "node-b", 5) is None
    time.sleep(0.3)
    assert cursor.claim(store, "siem", b, "node-b", 5) is not None
    assert cursor.claim(store, "siem", a, "node-a", 5) is None  # the old holder finds it taken


def test_a_new_sink_starts_at_the_beginning_or_with_start_new_at_the_head(store: Store) -> None:
    for i in range(4):
        store.audit("a", f"x{i}", "ok")
    new = cursor.claim(store, "fresh", cursor.new_token(), "n", 5, "new")
    old = cursor.claim(store, "all", cursor.new_token(), "n", 5, "all")
    assert new is not None and old is not None and (new.seq, old.seq) == (4, 0)
    again = cursor.claim(store, "fresh", cursor.new_token(), "n", 5, "all")
    assert again is None  # held; and its row keeps where it started
    assert [r.seq for r in cursor.status(store, ["fresh"]) if r.sink == "fresh"] == [4]


class FlakySink:
    """Fails while ``down``; records what it was sent."""

    def __init__(self) -> None:
        self.down = True
        self.got: list[int] = []
        self.attempts = 0

    def send(self, records: Sequence[dict[str, Any]]) -> None:
        self.attempts += 1
        if self.down:
            raise DeliveryError("ConnectionRefusedError: down")
        self.got += [r["seq"] for r in records]

    def close(self) -> None:
        pass


def config(tmp_path: Path) -> Config:
    p = tmp_path / "bastion.yaml"
    p.write_text(f"""\
listen: {{host: 127.0.0.1, port: 2222}}
host_keys: [host_key]
database: sqlite:///{tmp_path / 'b.db'}
recordings_dir: rec
audit:
  export:
    syslog:
      - {{name: siem, host: 127.0.0.1, port: 9}}
    delivery: {{poll: 0.05, backoff: 0.05, max_backoff: 0.1, timeout: 1, lease: 2, batch: 4}}
""")
    return load_config(p, check_files=False)


def test_the_loop_retries_a_failing_sink_and_then_sends_everything_in_order(store: Store, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    sink = FlakySink()
    monkeypatch.setattr("bastion.export.worker.build", lambda cfg, model, timeout: sink)
    cfg = config(tmp_path)
    for i in range(10):
        store.audit("a", f"x{i}", "ok")

    async def main() -> None:
        ex = Exporter(store, lambda: cfg, "node-a")
        ex.start()
        deadline = time.monotonic() + 10
        while sink.attempts < 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert sink.got == [] and [r.seq for r in cursor.status(store, ["siem"])] == [0]
        (row,) = cursor.status(store, ["siem"])
        assert row.last_error == "ConnectionRefusedError: down" and row.holder == "node-a"
        sink.down = False
        for i in range(3):
            store.audit("a", f"y{i}", "ok")
        while len(sink.got) < 13:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await ex.stop()

    asyncio.run(main())
    assert sink.got == list(range(1, 14))  # in order, none missed, none twice (no failure after a send)
    (row,) = cursor.status(store, ["siem"])
    assert (row.seq, row.behind, row.holder, row.last_error) == (13, 0, None, None)  # stopped: lease given back
