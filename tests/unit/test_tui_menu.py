"""The menu screen, driven with Textual's Pilot against a scripted broker."""

from __future__ import annotations

from typing import Any

from textual.widgets import DataTable, Static

from bastion.rpc.proto import RpcError
from tui.app import MenuApp, describe_outcome

RESOURCES = [
    {"name": "db-prod", "kind": "ssh", "description": "production database host"},
    {"name": "queue-1", "kind": "ssh", "description": "message queue"},
    {"name": "web-1", "kind": "ssh", "description": "front web server"},
]


class ScriptedBroker:
    """Answers like the daemon would and remembers what was asked."""

    def __init__(self, resources: list[dict[str, Any]], open_error: str | None = None):
        self.resources = resources
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.open_error = open_error

    def call(self, method: str, **params: Any) -> Any:
        self.calls.append((method, params))
        if method == "hello":
            return {"user": "alice", "groups": ["ops"], "roles": ["operators"], "review": False, "audit": False}
        if method == "resources.list":
            return {"resources": self.resources}
        if method == "resource.open":
            if self.open_error:
                raise RpcError("denied", self.open_error)
            return {"ok": True, "message": f"{params['name']}: exited with status 0", "exit_status": 0,
                    "session_id": "20261122-000000-abc", "duration": 75.2}
        raise AssertionError(method)


def rows(app: MenuApp) -> list[str]:
    table = app.query_one(DataTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


def status(app: MenuApp) -> str:
    return str(app.query_one("#status", Static).render())


async def test_lists_resources_and_filters_as_you_type() -> None:
    app = MenuApp(ScriptedBroker(RESOURCES))  # type: ignore[arg-type]
    async with app.run_test(size=(100, 30)) as pilot:
        assert rows(app) == ["db-prod", "queue-1", "web-1"]
        assert "alice" in app.sub_title
        await pilot.press("w", "e")
        assert rows(app) == ["web-1"]
        await pilot.press("backspace", "backspace", "u", "e", "u")
        assert app.filter == "ueu" and rows(app) == ["queue-1"]
        await pilot.press("q")  # q is text while a filter is being typed
        assert app.filter == "ueuq" and rows(app) == [] and app.is_running
        await pilot.press("escape")
        assert app.filter == "" and len(rows(app)) == 3
        await pilot.press("d", "a", "t", "a", "b")  # matches the description too
        assert rows(app) == ["db-prod"]


async def test_enter_opens_the_selected_resource_and_reports_how_it_ended() -> None:
    broker = ScriptedBroker(RESOURCES)
    app = MenuApp(broker)  # type: ignore[arg-type]
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("down", "down", "enter")
        assert ("resource.open", {"name": "web-1"}) in broker.calls
        await pilot.pause()
        assert "web-1: exited with status 0 after 1m15s" in status(app)
        assert "20261122-000000-abc" in status(app)


async def test_refusal_is_shown_and_menu_stays() -> None:
    broker = ScriptedBroker(RESOURCES, open_error="no such resource or not permitted: db-prod")
    app = MenuApp(broker)  # type: ignore[arg-type]
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("enter")
        await pilot.pause()
        assert "not permitted: db-prod" in status(app)
        assert app.is_running


async def test_q_quits_and_empty_menu_explains() -> None:
    app = MenuApp(ScriptedBroker([]))  # type: ignore[arg-type]
    async with app.run_test(size=(100, 30)) as pilot:
        assert "may not open any resource" in status(app)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_value == 0


def test_describe_outcome() -> None:
    assert describe_outcome({"ok": False, "message": "web: cannot connect"}) == "web: cannot connect"
    assert describe_outcome({"ok": True, "message": "m", "duration": 4000, "session_id": "s1"}) == \
        "m after 1h06m · recorded as s1"
