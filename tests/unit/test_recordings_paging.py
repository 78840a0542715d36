"""F5's list pages through the store: every session exactly once, newest first, whatever the ties in start time;
each reply stays far below the RPC frame limit whatever the rows hold; a cursor the list did not give is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from bastion.rpc.menu import MenuHandlers
from bastion.rpc.proto import MAX_FRAME, encode
from bastion.rpc.server import RefusedRequest
from bastion.services import Services
from bastion.store.db import Store
from bastion.store.models import Session
from tests.support.menu import menu_for
from tests.unit.test_menu_handlers import config, services  # noqa: F401  (fixtures)


def fill(store: Store, n: int, *, command: str = "id", user: str = "alice") -> list[str]:
    base = datetime(2026, 11, 1, tzinfo=UTC)
    ids = []
    for i in range(n):
        sid = f"{user[:3]}{i:08d}-{'x' * 8}"
        at = base + timedelta(seconds=i // 3)  # three sessions share each start time: ties to break
        store.start_session(sid, user=user, resource="web", kind="ssh", mode="exec", command=command,
                            client_addr="192.0.2.1:1", node="n", recording_path=Path(f"/r/{sid}.cast"))
        with store.tx() as s:
            s.execute(update(Session).where(Session.id == sid).values(started_at=at))
        ids.append(sid)
    return ids


@pytest.fixture
def real(services: Services, tmp_path: Path) -> Services:  # noqa: F811
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    store.migrate()
    services.store = store
    return services


async def pages(menu: MenuHandlers, **filters: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    params: dict[str, str] = dict(filters)
    while True:
        reply = await menu.table()["recordings.list"](params)
        assert len(encode({"id": 1, "result": reply})) < MAX_FRAME // 2 + 4096
        out.append(reply)
        if not reply["next"]:
            return out
        params = {**filters, "cursor": reply["next"]}


async def test_every_session_once_newest_first(real: Services) -> None:
    ids = fill(real.store, 250)
    got = await pages(menu_for(real, "eve"))
    seen = [s["id"] for page in got for s in page["sessions"]]
    assert len(got) == 3 and [len(p["sessions"]) for p in got] == [100, 100, 50]
    assert seen == sorted(ids, reverse=True)  # ties in start time broken by id: none lost, none twice


async def test_filters_hold_across_pages(real: Services) -> None:
    fill(real.store, 120, user="alice")
    bob = fill(real.store, 130, user="bob")
    seen = [s["id"] for page in await pages(menu_for(real, "eve"), user="bob") for s in page["sessions"]]
    assert sorted(seen) == sorted(bob)


async def test_long_rows_end_a_page_early_never_past_the_frame_limit(real: Services) -> None:
    ids = fill(real.store, 150, command="é" * 4000)  # escaped in JSON: six bytes each
    got = await pages(menu_for(real, "eve"))
    assert len(got) > 2 and sum(len(p["sessions"]) for p in got) == len(ids)
    assert all(len(s["command"]) == 500 for p in got for s in p["sessions"])


@pytest.mark.parametrize("cursor", ["nope", "2026-11-01T00:00:00|", "2026-11-01T00:00:00|abc", "x|y", "|" * 3])
async def test_a_cursor_it_did_not_give_is_refused(real: Services, cursor: str) -> None:
    with pytest.raises(RefusedRequest) as e:
        await menu_for(real, "eve").table()["recordings.list"]({"cursor": cursor})
    assert e.value.code == "bad_request"
