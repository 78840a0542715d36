"""The simulated API server's HTTP handler: authentication (bearer token or client certificate; impersonation
recorded), the request log, discovery, the resources and their subresources, watch, and exec over WebSocket."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import ssl
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from bastion.demo.kubesim.cluster import RESOURCES, api_resource_list, cells, columns, meta, status, ts
from bastion.demo.kubesim.podshell import PodShell
from bastion.demo.kubesim.stream import ERROR, MAX_BODY, WS_GUID, WS_PROTOCOLS, WebSocket, run_exec

if TYPE_CHECKING:
    from bastion.demo.kubesim.server import KubeSim


class ApiHandler(BaseHTTPRequestHandler):
    """One connection to the simulator; :class:`KubeSim` subclasses it with ``server_sim`` set to itself."""

    server_sim: KubeSim
    protocol_version = "HTTP/1.1"
    server_version = "kubesim"

    def log_message(self, format: str, *args: Any) -> None:  # quiet; the requests list is the log
        pass

    # -- plumbing ------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        self.request.settimeout(60)
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError):
            self.close_connection = True
        super().setup()

    def _send_json(self, code: int, obj: Any, content_type: str = "application/json") -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_text(self, code: int, text: str) -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, code: int, reason: str, message: str, **details: Any) -> None:
        self._send_json(code, status(code, reason, message, **details))

    def _user(self) -> tuple[str | None, list[str]]:
        sim = self.server_sim
        auth = self.headers.get("Authorization", "")
        if sim.token and hmac.compare_digest(auth.encode(), f"Bearer {sim.token}".encode()):
            return "kubesim-admin", ["system:masters", "system:authenticated"]
        try:
            cert = self.request.getpeercert()
        except (ValueError, AttributeError):
            cert = None
        if cert:
            fields = [kv for rdn in cert.get("subject", ()) for kv in rdn]
            cn = next((v for k, v in fields if k == "commonName"), None)
            if cn:
                return cn, [v for k, v in fields if k == "organizationName"] + ["system:authenticated"]
        return None, []

    def _body(self) -> bytes | None:
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            return None
        return self.rfile.read(n) if n else b""

    # -- dispatch ------------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def _handle(self) -> None:
        sim = self.server_sim
        u = urlsplit(self.path)
        query = parse_qs(u.query, keep_blank_values=True)
        user, groups = self._user()
        if user and self.headers.get("Impersonate-User"):  # only a trusted caller gets here; record who it acts for
            user, groups = self.headers["Impersonate-User"], self.headers.get_all("Impersonate-Group") or []
        with sim.lock:
            sim.requests.append({"method": self.command, "path": u.path, "query": query,
                                 "headers": {k.lower(): v for k, v in self.headers.items()}, "user": user,
                                 "groups": groups})
        if user is None:
            self._body()
            return self._error(401, "Unauthorized", "Unauthorized")
        body = self._body()
        if body is None:
            return self._error(413, "RequestEntityTooLarge", "the request body is too large")
        try:
            self._route(u.path, query, body, user, groups)
        except (BrokenPipeError, ConnectionResetError, EOFError, TimeoutError, ssl.SSLError):
            self.close_connection = True

    def _route(self, path: str, q: dict[str, list[str]], body: bytes, user: str, groups: list[str]) -> None:
        m = self.command
        if path == "/version" and m == "GET":
            return self._send_json(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0-kubesim",
                                         "platform": "linux/amd64"})
        if path == "/api" and m == "GET":
            return self._send_json(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.server_sim.port}"}]})
        if path == "/apis" and m == "GET":
            gv = {"groupVersion": "authentication.k8s.io/v1", "version": "v1"}
            return self._send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": "authentication.k8s.io", "versions": [gv], "preferredVersion": gv}]})
        if path == "/api/v1" and m == "GET":
            return self._send_json(200, api_resource_list())
        if path == "/apis/authentication.k8s.io/v1" and m == "GET":
            return self._send_json(200, {"kind": "APIResourceList", "apiVersion": "v1",
                                         "groupVersion": "authentication.k8s.io/v1", "resources": [
                                             {"name": "selfsubjectreviews", "singularName": "selfsubjectreview",
                                              "namespaced": False, "kind": "SelfSubjectReview",
                                              "verbs": ["create"]}]})
        if path == "/apis/authentication.k8s.io/v1/selfsubjectreviews" and m == "POST":
            return self._send_json(201, {"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                                         "metadata": {"creationTimestamp": None},
                                         "status": {"userInfo": {"username": user, "groups": groups}}})
        parts = path.split("/")
        if len(parts) >= 4 and parts[:3] == ["", "api", "v1"]:
            rest = parts[3:]
            ns = None
            if len(rest) >= 3 and rest[0] == "namespaces":
                ns, rest = rest[1], rest[2:]
            elif rest[0] == "namespaces" and len(rest) <= 2:
                pass  # the namespaces resource itself
            if rest and rest[0] in RESOURCES and len(rest) <= 3:
                return self._resource(rest[0], ns, rest[1] if len(rest) > 1 else None,
                                      rest[2] if len(rest) > 2 else None, q, body)
        return self._error(404, "NotFound", "the server could not find the requested resource")

    # -- resources -----------------------------------------------------------------------------------------------
    def _store(self, res: str, ns: str | None) -> dict[str, dict[str, Any]]:
        namespaced = RESOURCES[res][1]
        return self.server_sim.objects.setdefault((res, ns if namespaced else None), {})

    def _select(self, res: str, ns: str | None, q: dict[str, list[str]]) -> list[dict[str, Any]]:
        sim = self.server_sim
        namespaced = RESOURCES[res][1]
        items = [o for (r, n), objs in sorted(sim.objects.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
                 if r == res and (not namespaced or ns is None or n == ns) for o in objs.values()]
        for sel in (q.get("fieldSelector") or [""])[0].split(","):
            if sel.startswith("metadata.name="):
                items = [o for o in items if o["metadata"]["name"] == sel.split("=", 1)[1]]
            elif sel.startswith("metadata.namespace="):
                items = [o for o in items if o["metadata"].get("namespace") == sel.split("=", 1)[1]]
            elif sel:
                items = []  # e.g. involvedObject.* on events: none recorded
        for sel in (q.get("labelSelector") or [""])[0].split(","):
            if "=" in sel:
                k, v = sel.replace("==", "=").split("=", 1)
                items = [o for o in items if o["metadata"].get("labels", {}).get(k) == v]
        return items

    def _wants_table(self) -> bool:
        return "as=Table" in self.headers.get("Accept", "")

    def _table(self, res: str, items: list[dict[str, Any]], q: dict[str, list[str]]) -> dict[str, Any]:
        include = (q.get("includeObject") or ["PartialObjectMetadata"])[0]

        def obj(o: dict[str, Any]) -> dict[str, Any] | None:
            if include == "None":
                return None
            if include == "Object":
                return o
            return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}

        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "1"},
                "columnDefinitions": [{"name": n, "type": t, "format": "name" if n == "Name" else "",
                                       "description": n, "priority": 0} for n, t in columns(res)],
                "rows": [{"cells": cells(res, o), "object": obj(o)} for o in items]}

    def _resource(self, res: str, ns: str | None, name: str | None, sub: str | None, q: dict[str, list[str]],
                  body: bytes) -> None:
        m = self.command
        kind, namespaced, _ = RESOURCES[res]
        if namespaced and ns is None and (name or m not in ("GET",)):
            return self._error(404, "NotFound", "the server could not find the requested resource")
        with self.server_sim.lock:
            store = self._store(res, ns)
            obj = copy.deepcopy(store.get(name)) if name else None
        if name and obj is None and not (m == "POST" and sub is None):
            return self._error(404, "NotFound", f'{res} "{name}" not found',
                               name=name, kind=res)
        if sub:
            return self._subresource(res, ns, name or "", sub, obj or {}, q)
        if m == "GET" and name is None:
            items = self._select(res, ns, q)
            if (q.get("watch") or [""])[0] in ("true", "1"):
                return self._watch(items)
            if self._wants_table():
                return self._send_json(200, self._table(res, items, q))
            return self._send_json(200, {"kind": f"{kind}List", "apiVersion": "v1",
                                         "metadata": {"resourceVersion": "1"}, "items": items})
        if m == "GET":
            assert obj is not None  # a name was given, and a missing object was answered with 404 above
            if self._wants_table():
                return self._send_json(200, self._table(res, [obj], q))
            return self._send_json(200, obj)
        if m == "DELETE" and name:
            with self.server_sim.lock:
                store.pop(name, None)
            assert obj is not None
            obj["metadata"]["deletionTimestamp"] = ts(time.time())
            return self._send_json(200, obj)
        if m == "DELETE":
            with self.server_sim.lock:
                items = self._select(res, ns, q)
                for o in items:
                    store.pop(o["metadata"]["name"], None)
            return self._send_json(200, {"kind": f"{kind}List", "apiVersion": "v1", "metadata": {}, "items": items})
        if m == "POST" and name is None:
            try:
                new = json.loads(body)
                new_name = new["metadata"]["name"]
            except (ValueError, KeyError, TypeError):
                return self._error(400, "BadRequest", "the body is not a valid object with metadata.name")
            with self.server_sim.lock:
                if new_name in store:
                    return self._error(409, "AlreadyExists", f'{res} "{new_name}" already exists')
                new["metadata"].update(meta(new_name, ns if namespaced else None, time.time()))
                new.setdefault("kind", kind)
                new.setdefault("apiVersion", "v1")
                store[new_name] = new
            return self._send_json(201, new)
        return self._error(405, "MethodNotAllowed", f"the simulator does not support {m} on {res}")

    def _watch(self, items: list[dict[str, Any]]) -> None:
        """The current objects as ADDED events, then the watch ends (kubectl re-lists when it needs to)."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for o in items:
            line = json.dumps({"type": "ADDED", "object": o}).encode() + b"\n"
            self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def _subresource(self, res: str, ns: str | None, name: str, sub: str, obj: dict[str, Any],
                     q: dict[str, list[str]]) -> None:
        if res == "pods" and sub == "log" and self.command == "GET":
            lines = [f'10.244.0.1 - - "GET /healthz HTTP/1.1" 200 2 "{name}" req={i}' for i in range(1, 6)]
            tail = int((q.get("tailLines") or ["0"])[0] or 0)
            return self._send_text(200, "\n".join(lines[-tail:] if tail else lines) + "\n")
        if sub == "proxy":
            return self._send_text(200, f"proxied to {res}/{name}\n")
        if res == "pods" and sub in ("exec", "attach"):
            return self._exec(name, q, attach=sub == "attach")
        if res == "serviceaccounts" and sub == "token" and self.command == "POST":
            return self._send_json(201, {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                                         "status": {"token": "simulated-service-account-token"}})
        return self._error(400, "BadRequest", f"the simulator does not support {res}/{sub}")

    # -- exec ------------------------------------------------------------------------------------------------------
    def _exec(self, pod: str, q: dict[str, list[str]], attach: bool) -> None:
        if "websocket" not in self.headers.get("Upgrade", "").lower():
            return self._error(400, "BadRequest", "the simulator serves exec only over WebSocket "
                                                  "(v5.channel.k8s.io); SPDY is not supported")
        offered = [p.strip() for p in self.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        proto = next((p for p in WS_PROTOCOLS if p in offered), None)
        key = self.headers.get("Sec-WebSocket-Key", "")
        if proto is None or not key:
            return self._error(400, "BadRequest", f"no supported stream protocol offered (want one of {WS_PROTOCOLS})")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode(), usedforsecurity=False).digest()).decode()
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.send_header("Sec-WebSocket-Protocol", proto)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        ws = WebSocket(self.rfile, self.request, v5=proto.startswith("v5"))
        flag = lambda k: (q.get(k) or ["false"])[0] in ("true", "1")  # noqa: E731
        command = q.get("command") or (["sh"] if attach else [])
        try:
            rc = run_exec(ws, PodShell(pod), command, stdin=flag("stdin"), tty=flag("tty"))
            if rc == 0:
                ws.channel(ERROR, json.dumps({"metadata": {}, "status": "Success"}).encode())
            else:
                ws.channel(ERROR, json.dumps({
                    "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                    "message": f"command terminated with non-zero exit code: exit code {rc}",
                    "details": {"causes": [{"reason": "ExitCode", "message": str(rc)}]}}).encode())
            ws.close()
        except (EOFError, OSError, ssl.SSLError):
            pass
