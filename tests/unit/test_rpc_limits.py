"""Every menu request gets an answer, and no answer is waited for forever (issue 19): a reply over the frame limit
becomes the error ``too_large`` (it used to be logged and never sent, and the menu waited with no key working), a
daemon that does not answer is a ``timeout`` after a while, and the menu shows either and keeps taking keys."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from textual.widgets import Static

from bastion.rpc.proto import MAX_FRAME, UNTIMED, RpcClient, RpcError, encode, reply_timeout
from bastion.rpc.server import BrokerServer
from tests.support.tui_daemon import until
from tui.app import MenuApp
from tui.recordings import RecordingsScreen

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
HUGE = [{"id": f"2026-{i:06d}", "user": "alice", "note": "x" * 200} for i in range(400)]  # ~90 KB as JSON


async def huge(params: dict[str, Any]) -> dict[str, Any]:
    return {"sessions": HUGE}


async def hello(params: dict[str, Any]) -> dict[str, Any]:
    return {"user": "eve", "groups": [], "roles": ["auditors"], "review": False, "audit": True, "server": "test",
            "login_required": False}


async def never(params: dict[str, Any]) -> None:
    await asyncio.Event().wait()


async def read_reply(reader: asyncio.StreamReader) -> dict[str, Any]:
    (n,) = struct.unpack(">I", await reader.readexactly(4))
    assert n <= MAX_FRAME
    return json.loads(await reader.readexactly(n))


@pytest.fixture()
async def channel() -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter, BrokerServer]]:
    ours, theirs = socket.socketpair()

    async def unencodable(params: dict[str, Any]) -> Any:
        return {"when": object()}

    server = BrokerServer(ours, {"hello": hello, "recordings.list": huge, "recording.detail": unencodable}, "test")
    task = asyncio.ensure_future(server.serve())
    reader, writer = await asyncio.open_unix_connection(sock=theirs)
    yield reader, writer, server
    writer.close()
    task.cancel()


async def test_a_reply_over_the_frame_limit_is_an_error_reply(
        channel: tuple[asyncio.StreamReader, asyncio.StreamWriter, BrokerServer],
        caplog: pytest.LogCaptureFixture) -> None:
    reader, writer, _ = channel
    assert len(json.dumps({"sessions": HUGE})) > MAX_FRAME
    writer.write(encode({"id": 1, "method": "recordings.list", "params": {}}))
    reply = await asyncio.wait_for(read_reply(reader), 5)
    assert reply["id"] == 1 and reply["error"]["code"] == "too_large"
    assert "recordings.list" in reply["error"]["message"] and f"limit is {MAX_FRAME}" in reply["error"]["message"]
    assert "answered too_large" in caplog.text
    writer.write(encode({"id": 2, "method": "recording.detail", "params": {"id": "x"}}))  # not JSON at all
    assert (await asyncio.wait_for(read_reply(reader), 5))["error"]["code"] == "internal"
    writer.write(encode({"id": 3, "method": "hello", "params": {}}))  # and the channel goes on
    assert (await asyncio.wait_for(read_reply(reader), 5))["result"]["user"] == "eve"


async def test_pushes_asked_for_meanwhile_are_one(
        channel: tuple[asyncio.StreamReader, asyncio.StreamWriter, BrokerServer]) -> None:
    reader, writer, server = channel
    for _ in range(50):
        server.notify_soon("queue.changed", 0.05)
    assert await asyncio.wait_for(read_reply(reader), 5) == {"event": "queue.changed", "data": {}}
    writer.write(encode({"id": 1, "method": "hello", "params": {}}))
    assert "result" in await asyncio.wait_for(read_reply(reader), 5)  # the next frame: no second push came
    server.notify_soon("queue.changed", 0.05)  # a change after the push is a push of its own
    assert await asyncio.wait_for(read_reply(reader), 5) == {"event": "queue.changed", "data": {}}


@contextmanager
def served(handlers: dict[str, Handler], timeout: float) -> Iterator[RpcClient]:
    """A menu's RPC client, served by a broker on a loop of its own thread (as in the daemon)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    ours, theirs = socket.socketpair()
    serving = asyncio.run_coroutine_threadsafe(BrokerServer(ours, handlers, "test").serve(), loop)
    client = RpcClient(theirs, timeout=timeout)
    try:
        yield client
    finally:
        theirs.shutdown(socket.SHUT_RDWR)
        client.close()
        serving.result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_a_reply_that_never_comes_is_a_timeout_and_a_late_one_is_dropped() -> None:
    answered = threading.Event()

    async def slow(params: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.6)
        answered.set()
        return {"late": True}

    with served({"hello": hello, "queue.list": slow, "recordings.list": never, "resource.open": slow}, 0.3) as rpc:
        started = time.monotonic()
        with pytest.raises(RpcError, match=r"did not answer \(recordings.list\) within 0.3 s") as e:
            rpc.call("recordings.list")
        assert e.value.code == "timeout" and time.monotonic() - started < 5
        with pytest.raises(RpcError) as e:
            rpc.call("queue.list")
        assert e.value.code == "timeout"
        answered.wait(5)
        assert rpc.call("hello")["user"] == "eve"  # the late answer went nowhere: each call gets its own
        assert rpc.call("resource.open") == {"late": True}  # a session lasts as long as it lasts


def test_only_calls_that_last_as_long_as_the_operator_wants_are_untimed() -> None:
    assert {"resource.open", "session.observe", "recording.play", "login.wait"} == UNTIMED
    assert reply_timeout("recordings.list") == 60 and reply_timeout("queue.list", 5) == 5
    assert reply_timeout("resource.open") is None


async def test_the_menu_says_so_and_keeps_taking_keys(caplog: pytest.LogCaptureFixture) -> None:
    async def recordings(params: dict[str, Any]) -> dict[str, Any]:
        if params:  # filtered: the daemon hangs
            await never(params)
        return await huge(params)

    async def resources(params: dict[str, Any]) -> dict[str, Any]:
        return {"resources": []}

    caplog.set_level(logging.WARNING)
    with served({"hello": hello, "resources.list": resources, "recordings.list": recordings}, 0.5) as rpc:
        app = MenuApp(rpc)
        async with app.run_test(size=(130, 30)) as pilot:
            await until(pilot, lambda: app.auditor)
            await pilot.press("f5")
            await until(pilot, lambda: isinstance(app.screen, RecordingsScreen) and "too large" in status(app))
            assert "answer to recordings.list is too large to send" in status(app)
            await pilot.press("slash", *"user=bob", "enter")
            await until(pilot, lambda: "did not answer" in status(app))
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is app.screen_stack[0])
            await pilot.press("q")
            await until(pilot, lambda: not app.is_running)


def status(app: MenuApp) -> str:
    return str(app.screen.query_one("#rec-status", Static).render())
