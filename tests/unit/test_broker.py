"""The daemon's broker refuses hostile session-process input and keeps serving."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
from typing import Any

import pytest

from bastion.rpc.proto import MAX_FRAME, RpcClient, RpcError, encode
from bastion.rpc.server import MAX_STRIKES, BrokerServer, RefusedRequest


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


async def read_reply(reader: asyncio.StreamReader) -> dict[str, Any]:
    (n,) = struct.unpack(">I", await reader.readexactly(4))
    return json.loads(await reader.readexactly(n))


@pytest.fixture()
async def broker() -> Any:
    ours, theirs = socket.socketpair()
    calls: list[dict[str, Any]] = []

    async def hello(params: dict[str, Any]) -> dict[str, Any]:
        calls.append(params)
        return {"user": "alice"}

    async def open_(params: dict[str, Any]) -> dict[str, Any]:
        if params["name"] == "boom":
            raise RuntimeError("handler bug")
        raise RefusedRequest("denied", f"not permitted: {params['name']}")

    server = BrokerServer(ours, {"hello": hello, "resource.open": open_}, "test")
    task = asyncio.ensure_future(server.serve())
    reader, writer = await asyncio.open_unix_connection(sock=theirs)
    yield reader, writer, task, calls
    writer.close()
    task.cancel()


@pytest.mark.parametrize("body", [
    b"not json", b"\xff\xfe", b"[1,2]", b'{"id":1}', b'{"id":"1","method":"hello","params":{}}',
    b'{"id":1,"method":"hello","params":{"user":"root"}}', b'{"id":1,"method":"admin.approve","params":{}}',
    b'{"id":1,"method":"resource.open","params":{"name":5}}', b'{"id":1,"method":"hello","params":[]}',
    b'{"id":1,"method":"hello","params":{},"as":"bob"}', b'{"id":true,"method":"hello","params":{}}',
])
async def test_malformed_requests_get_errors_and_channel_survives(broker: Any, body: bytes) -> None:
    reader, writer, task, calls = broker
    writer.write(frame(body))
    reply = await asyncio.wait_for(read_reply(reader), 5)
    assert reply["error"]["code"] == "bad_request"
    writer.write(encode({"id": 7, "method": "hello", "params": {}}))
    assert (await asyncio.wait_for(read_reply(reader), 5)) == {"id": 7, "result": {"user": "alice"}}
    assert not task.done()


async def test_refusals_and_handler_bugs_are_replies_not_crashes(broker: Any) -> None:
    reader, writer, task, _ = broker
    writer.write(encode({"id": 1, "method": "resource.open", "params": {"name": "prod"}}))
    assert (await read_reply(reader))["error"] == {"code": "denied", "message": "not permitted: prod"}
    writer.write(encode({"id": 2, "method": "resource.open", "params": {"name": "boom"}}))
    err = (await read_reply(reader))["error"]
    assert err["code"] == "internal" and "handler bug" not in err["message"]
    assert not task.done()


async def test_oversized_frame_closes_channel(broker: Any) -> None:
    reader, writer, task, _ = broker
    writer.write(struct.pack(">I", MAX_FRAME + 1))
    assert (await read_reply(reader))["error"]["code"] == "too_large"
    await asyncio.wait_for(task, 5)


async def test_too_many_strikes_close_channel(broker: Any) -> None:
    reader, writer, task, _ = broker
    for _ in range(MAX_STRIKES):
        writer.write(frame(b"garbage"))
    await asyncio.wait_for(task, 5)


def test_client_routes_replies_and_events_and_fails_when_closed() -> None:
    a, b = socket.socketpair()
    client = RpcClient(a)

    def serve_once() -> None:
        (n,) = struct.unpack(">I", b.recv(4))
        req = json.loads(b.recv(n))
        b.sendall(encode({"id": 99, "result": "stray"})  # a reply nobody asked for is ignored
                  + encode({"event": "queue.changed", "data": {}})
                  + encode({"id": req["id"], "error": {"code": "x", "message": "m"}}))

    t = threading.Thread(target=serve_once)
    t.start()
    with pytest.raises(RpcError, match="m"):
        client.call("hello")
    t.join()
    assert client.events == [{"event": "queue.changed", "data": {}}]
    b.close()
    with pytest.raises(RpcError, match="closed"):
        client.call("hello")
