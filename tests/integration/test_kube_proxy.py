"""The session's Kubernetes API proxy on its own, in front of the simulated API server, driven with raw HTTP so the
requests kubectl would never send can be sent: foreign tokens, impersonation headers, malformed requests, oversized
bodies, SPDY upgrades, a client that hangs up while held, an API server that is down, lies about TLS or answers
garbage. The proxy must refuse, say why, and keep serving."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import ssl
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bastion.demo.devcerts import make_server_cert
from bastion.demo.kubesim import KubeSim, SimTLS, make_tls, run_in_thread
from bastion.proxies.kube.proxy import MAX_BODY, KubeProxy, Upstream
from bastion.proxies.kube.tls import upstream_context
from policies.engine import Action, Decision
from policies.kube import KubeRequest

TOKEN = "upstream-token-7d1e"


@dataclass
class Harness:
    proxy: KubeProxy
    sim: KubeSim
    tls: SimTLS
    noted: list[Decision] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    withdrawn: list[bool] = field(default_factory=list)
    held: asyncio.Future[dict[str, Any]] | None = None


def judge(req: KubeRequest) -> Decision:
    if req.resource == "secrets":
        return Decision(Action.BLOCK, "no-secrets", "secrets stay in the cluster", req.describe())
    if req.verb == "delete":
        return Decision(Action.REQUIRE_APPROVAL, "delete-needs-approval", "needs a reviewer", req.describe())
    if req.subresource == "portforward":
        return Decision(Action.BLOCK, None, "port forwarding is disabled", req.describe())
    return Decision(Action.ALLOW, None, "default", req.describe())


@pytest.fixture(scope="module")
def sim_tls(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tls = make_tls(tmp_path_factory.mktemp("kubesim") / "tls")
    sim, stop = run_in_thread(token=TOKEN, cert=tls.cert, key=tls.key, client_ca=tls.ca)
    yield sim, tls
    stop()


async def make_harness(sim: KubeSim, tls: SimTLS, *, impersonate: tuple[str, tuple[str, ...]] | None = None,
                       port: int | None = None, ctx: ssl.SSLContext | None = None) -> Harness:
    up = Upstream("127.0.0.1", port or sim.port, ctx or upstream_context(tls.ca), TOKEN,
                  impersonate[0] if impersonate else None, impersonate[1] if impersonate else ())
    h: Harness

    async def hold(d: Decision) -> dict[str, Any]:
        h.held = asyncio.get_running_loop().create_future()
        return await h.held

    proxy = KubeProxy(up, judge=judge, hold=hold, note=lambda d: h.noted.append(d),
                      withdraw=lambda: h.withdrawn.append(True), event=lambda e: h.events.append(e))
    h = Harness(proxy, sim, tls)
    await proxy.serve()
    return h


@pytest.fixture
async def h(sim_tls: Any) -> AsyncIterator[Harness]:
    harness = await make_harness(*sim_tls)
    yield harness
    await harness.proxy.close()


async def connect(h: Harness) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    ctx = ssl.create_default_context(cadata=h.proxy.cert.cert_pem.decode())
    return await asyncio.open_connection("127.0.0.1", h.proxy.port, ssl=ctx, server_hostname="127.0.0.1")


async def read_response(r: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode().split("\r\n")
    code = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
    if code == 101:
        return code, headers, b""
    if "content-length" in headers:
        body = await r.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while (n := int((await r.readline()).strip(), 16)) > 0:
            body += await r.readexactly(n)
            await r.readline()
        await r.readline()
    else:
        body = await r.read()
    return code, headers, body


async def call(h: Harness, method: str, path: str, *, token: str | None = None, headers: str = "",
               body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    r, w = await connect(h)
    tok = h.proxy.token if token is None else token
    w.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n{headers}"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    try:
        return await read_response(r)
    finally:
        w.close()


def reached(h: Harness, since: int) -> list[dict[str, Any]]:
    return h.sim.requests[since:]


async def test_only_the_session_token_gets_in_and_the_real_token_goes_out(h: Harness) -> None:
    n = len(h.sim.requests)
    for tok in ("", "wrong", TOKEN):  # the real cluster token is no key to the proxy either
        code, _, body = await call(h, "GET", "/api/v1/namespaces/default/pods", token=tok)
        assert code == 401 and b"session's token" in body
    assert reached(h, n) == []
    code, _, body = await call(h, "GET", "/api/v1/namespaces/default/pods")
    assert code == 200 and "web-1" in body.decode()
    (seen,) = reached(h, n)
    assert seen["headers"]["authorization"] == f"Bearer {TOKEN}" and seen["user"] == "kubesim-admin"
    assert h.proxy.token not in json.dumps(seen)


@pytest.mark.parametrize("hdr", ["Impersonate-User: system:admin\r\n", "impersonate-group: system:masters\r\n",
                                 "Impersonate-Uid: 0\r\n", "Impersonate-Extra-scopes: all\r\n"])
async def test_impersonation_headers_are_refused(h: Harness, hdr: str) -> None:
    n = len(h.sim.requests)
    code, _, body = await call(h, "GET", "/api/v1/namespaces/default/pods", headers=hdr)
    assert code == 403 and b"impersonation" in body
    assert reached(h, n) == []


async def test_impersonating_upstream_acts_as_the_operator_only(sim_tls: Any) -> None:
    h = await make_harness(*sim_tls, impersonate=("alice", ("ops", "oncall")))
    try:
        n = len(h.sim.requests)
        code, _, body = await call(h, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                                   body=b'{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}')
        assert code == 201, body
        assert json.loads(body)["status"]["userInfo"] == {"username": "alice", "groups": ["ops", "oncall"]}
        (seen,) = reached(h, n)
        assert seen["headers"]["impersonate-user"] == "alice"
    finally:
        await h.proxy.close()


async def test_blocked_requests_name_the_rule_and_never_reach_the_server(h: Harness) -> None:
    n = len(h.sim.requests)
    code, _, body = await call(h, "GET", "/api/v1/namespaces/default/secrets/db-password")
    st = json.loads(body)
    assert code == 403 and st["kind"] == "Status" and st["reason"] == "Forbidden"
    assert "rule 'no-secrets'" in st["message"]
    assert reached(h, n) == []
    assert h.noted[-1].rule == "no-secrets"


@pytest.mark.parametrize("path", ["/api/v1/namespaces/default/pods/%2e%2e/secrets", "//api/v1/secrets",
                                  "/api/v1/namespaces/default/pods/../secrets", "http://evil/api/v1/pods",
                                  "/api/v1/namespaces/default/pods\\..\\secrets"])
async def test_ambiguous_targets_are_refused_as_unjudgeable(h: Harness, path: str) -> None:
    n = len(h.sim.requests)
    code, _, body = await call(h, "GET", path)
    assert code == 400 and b"refused" in body
    assert reached(h, n) == []
    assert h.noted[-1].action == Action.BLOCK


async def test_held_request_waits_and_hanging_up_withdraws_it(h: Harness) -> None:
    n = len(h.sim.requests)
    r, w = await connect(h)
    w.write(f"DELETE /api/v1/namespaces/default/pods/web-1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            f"{h.proxy.token}\r\nContent-Length: 0\r\n\r\n".encode())
    await w.drain()
    for _ in range(100):
        if h.held is not None:
            break
        await asyncio.sleep(0.05)
    assert h.held is not None and reached(h, n) == []
    w.close()  # kubectl's Ctrl-C
    for _ in range(100):
        if h.withdrawn:
            break
        await asyncio.sleep(0.05)
    assert h.withdrawn == [True]
    h.held.set_result({"status": "withdrawn"})
    await asyncio.sleep(0.1)
    assert reached(h, n) == [] and "web-1" in h.sim.objects[("pods", "default")]


async def test_denied_hold_is_a_forbidden_status(h: Harness) -> None:
    n = len(h.sim.requests)
    task = asyncio.ensure_future(call(h, "DELETE", "/api/v1/namespaces/default/pods/web-2"))
    for _ in range(100):
        if h.held is not None:
            break
        await asyncio.sleep(0.05)
    assert h.held is not None
    h.held.set_result({"status": "denied", "status_reason": "by bob: not now"})
    code, _, body = await task
    assert code == 403 and "denied" in json.loads(body)["message"] and "not now" in json.loads(body)["message"]
    assert reached(h, n) == []


async def test_malformed_http_is_refused_and_the_proxy_keeps_serving(h: Harness) -> None:
    for junk in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
                 b"GET /api HTTP/1.1\r\nHost: x\r\nContent-Length: -4\r\n\r\n", b"\x16\x03\x01" + os.urandom(64)):
        r, w = await connect(h)
        w.write(junk)
        await w.drain()
        data = await asyncio.wait_for(r.read(), 10)
        assert data == b"" or data.startswith(b"HTTP/1.1 4"), data[:80]
        w.close()
    r, w = await connect(h)
    w.write(b"GET /api HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + h.proxy.token.encode() + b"\r\n\r\n")
    code, _, body = await read_response(r)
    w.close()
    assert code == 200 and b"APIVersions" in body
    assert h.proxy.errors == []


async def test_oversized_bodies_are_refused(h: Harness) -> None:
    n = len(h.sim.requests)
    code, _, body = await call(h, "POST", "/api/v1/namespaces/default/configmaps", body=b"x" * (MAX_BODY + 1))
    assert code == 413 and b"limited" in body
    assert reached(h, n) == []


async def test_spdy_is_refused_but_a_blocked_request_gets_the_policy_answer(h: Harness) -> None:
    spdy = "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
    code, _, body = await call(h, "POST", "/api/v1/namespaces/default/pods/web-1/exec?command=id&stdout=true",
                               headers=spdy)
    assert code == 400 and b"SPDY" in body
    code, _, body = await call(h, "POST", "/api/v1/namespaces/default/pods/web-1/portforward?ports=80",
                               headers=spdy)
    assert code == 403 and b"port forwarding is disabled" in body
    code, _, body = await call(h, "GET", "/api/v1/namespaces/default/pods", headers="Connection: Upgrade\r\n"
                               "Upgrade: websocket\r\n")
    assert code == 400 and b"upgrade only" in body


async def test_connection_named_headers_are_not_forwarded(h: Harness) -> None:
    n = len(h.sim.requests)
    code, _, _ = await call(h, "GET", "/api/v1/namespaces/default/pods",
                            headers="Connection: X-Secret-Hop\r\nX-Secret-Hop: 1\r\nX-Kept: 1\r\n")
    assert code == 200
    (seen,) = reached(h, n)
    assert "x-secret-hop" not in seen["headers"] and seen["headers"]["x-kept"] == "1"


async def test_exec_websocket_is_relayed_with_stream_markers(h: Harness) -> None:
    r, w = await connect(h)
    key = base64.b64encode(os.urandom(16)).decode()
    w.write(f"GET /api/v1/namespaces/default/pods/web-1/exec?command=hostname&stdout=true HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {h.proxy.token}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n".encode())
    code, headers, _ = await read_response(r)
    assert code == 101 and headers["sec-websocket-protocol"] == "v5.channel.k8s.io"
    frames: list[bytes] = []
    while True:
        b0, n = await asyncio.wait_for(r.readexactly(2), 10)
        payload = await r.readexactly(n & 0x7F)  # small frames only here
        if b0 & 0x0F == 0x8:
            break
        frames.append(payload)
    w.close()
    assert frames[0] == b"\x01web-1\n"
    assert json.loads(frames[-1][1:])["status"] == "Success" and frames[-1][0] == 3
    for _ in range(50):
        if len(h.events) >= 2:
            break
        await asyncio.sleep(0.05)
    assert [e.split(": ")[-1] for e in h.events] == ["stream opened", "stream closed"]
    assert "pods/exec web-1" in h.events[0]


async def test_api_server_down_or_untrusted_is_a_503(sim_tls: Any, tmp_path: Path) -> None:
    sim, tls = sim_tls
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    other_ca = make_server_cert(tmp_path / "other").ca  # a CA that did not sign the simulator's certificate
    for kw in ({"port": dead}, {"ctx": upstream_context(other_ca)}):
        h = await make_harness(sim, tls, **kw)  # type: ignore[arg-type]
        try:
            n = len(sim.requests)
            code, _, body = await call(h, "GET", "/api/v1/namespaces/default/pods")
            assert code == 503 and b"cannot be reached" in body
            assert reached(h, n) == []
        finally:
            await h.proxy.close()


async def test_a_garbage_answer_from_the_api_server_is_a_502(sim_tls: Any) -> None:
    _, tls = sim_tls
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls.cert, tls.key)
    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def liar() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except TimeoutError:
                continue
            try:
                with ctx.wrap_socket(c, server_side=True) as tc:
                    tc.recv(65536)
                    tc.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n")
            except (OSError, ssl.SSLError):
                pass

    t = threading.Thread(target=liar, daemon=True)
    t.start()
    sim = type("S", (), {"port": srv.getsockname()[1], "requests": []})()
    h = await make_harness(sim, tls)  # type: ignore[arg-type]
    try:
        code, _, body = await call(h, "GET", "/api/v1/namespaces/default/pods")
        assert code == 502 and b"malformed" in body
        code, _, _ = await call(h, "GET", "/api")  # still serving
        assert code == 502
    finally:
        stop.set()
        await h.proxy.close()
        await asyncio.to_thread(t.join, 5)
        srv.close()

