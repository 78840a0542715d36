"""A simulated Kubernetes API server for the demo's ``demo-k8s`` resource and the tests (there is no real API server
on this machine). It speaks enough of the API for stock kubectl: discovery, pods (list/get/delete/deletecollection,
Table output, logs, describe), secrets, namespaces, nodes, ``kubectl auth whoami``, and exec over WebSocket
(``v5.channel.k8s.io``/``v4``) into a small scripted shell. It records every request that reaches it, so tests can
prove what the bastion let through. Bearer token and/or client certificate authentication. Never for production.

``python -m bastion.demo.kubesim --dir D`` writes TLS material and a token into D and serves until interrupted.
"""

from __future__ import annotations

import argparse
import base64
import copy
import datetime as dt
import hashlib
import hmac
import json
import re
import shlex
import socket
import ssl
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bastion.demo.devcerts import ServerCert, make_client_cert, make_server_cert

MAX_BODY = 3 * 1024 * 1024
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
PROMPT = "/ # "


# -- TLS material ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SimTLS:
    """The simulator's CA (what kubectl or the bastion trusts), its server certificate, and a client certificate
    (CN=kube-admin, O=system:masters) for client-certificate authentication."""

    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path


def make_tls(d: Path) -> SimTLS:
    """Write a throwaway CA, a 127.0.0.1 server certificate and a client certificate into ``d``."""
    sc: ServerCert = make_server_cert(d, "kubesim CA")
    cc, ck = make_client_cert(sc, d, "kube-admin", ("system:masters",))
    return SimTLS(sc.ca, sc.cert, sc.key, cc, ck)


# -- the simulated cluster's objects ---------------------------------------------------------------------------------
def _ts(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(t: float) -> str:
    s = max(0, int(time.time() - t))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _meta(name: str, ns: str | None, created: float, **extra: Any) -> dict[str, Any]:
    m: dict[str, Any] = {"name": name, "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{ns}/{name}")),
                         "resourceVersion": "1", "creationTimestamp": _ts(created)}
    if ns is not None:
        m["namespace"] = ns
    m.update(extra)
    return m


def _pod(name: str, ns: str, created: float, image: str, app: str, ip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": _meta(name, ns, created, labels={"app": app}),
            "spec": {"containers": [{"name": app, "image": image}], "nodeName": "node-1",
                     "restartPolicy": "Always", "serviceAccountName": "default"},
            "status": {"phase": "Running", "podIP": ip, "hostIP": "10.0.0.1", "startTime": _ts(created),
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": app, "ready": True, "restartCount": 0, "image": image,
                                              "imageID": "", "started": True,
                                              "state": {"running": {"startedAt": _ts(created)}}}]}}


def seed_objects(now: float | None = None) -> dict[tuple[str, str | None], dict[str, dict[str, Any]]]:
    """The cluster's initial objects: {(resource, namespace or None): {name: object}}."""
    t = (now or time.time()) - 3 * 3600
    secret_data = {"password": base64.b64encode(b"password-not-for-you").decode()}
    return {
        ("namespaces", None): {n: {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(n, None, t),
                                   "status": {"phase": "Active"}} for n in ("default", "kube-system", "payments")},
        ("nodes", None): {"node-1": {"apiVersion": "v1", "kind": "Node", "metadata": _meta("node-1", None, t),
                                     "status": {"conditions": [{"type": "Ready", "status": "True"}],
                                                "nodeInfo": {"kubeletVersion": "v1.33.0"}}}},
        ("pods", "default"): {f"web-{i}": _pod(f"web-{i}", "default", t + 60 * i, "nginx:1.27", "web",
                                              f"10.244.0.{10 + i}") for i in (1, 2, 3)},
        ("pods", "payments"): {"ledger-0": _pod("ledger-0", "payments", t, "postgres:16", "ledger", "10.244.0.30")},
        ("pods", "kube-system"): {"coredns-0": _pod("coredns-0", "kube-system", t, "coredns:1.11", "coredns",
                                                    "10.244.0.2")},
        ("secrets", "default"): {"db-password": {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                                 "metadata": _meta("db-password", "default", t),
                                                 "data": secret_data}},
        ("configmaps", "default"): {"web-config": {"apiVersion": "v1", "kind": "ConfigMap",
                                                   "metadata": _meta("web-config", "default", t),
                                                   "data": {"LISTEN": ":8080"}}},
    }


# resource -> (kind, namespaced, short names, table columns)
RESOURCES: dict[str, tuple[str, bool, list[str]]] = {
    "pods": ("Pod", True, ["po"]),
    "secrets": ("Secret", True, []),
    "configmaps": ("ConfigMap", True, ["cm"]),
    "events": ("Event", True, ["ev"]),
    "serviceaccounts": ("ServiceAccount", True, ["sa"]),
    "namespaces": ("Namespace", False, ["ns"]),
    "nodes": ("Node", False, ["no"]),
}
SUBRESOURCES = {"pods": ["exec", "attach", "log", "portforward", "proxy", "status"], "nodes": ["proxy"],
                "serviceaccounts": ["token"]}
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def _api_resource_list() -> dict[str, Any]:
    out = []
    for res, (kind, namespaced, short) in RESOURCES.items():
        singular = kind.lower()
        out.append({"name": res, "singularName": singular, "namespaced": namespaced, "kind": kind, "verbs": VERBS,
                    **({"shortNames": short} if short else {})})
        for sub in SUBRESOURCES.get(res, []):
            verbs = ["get"] if sub == "log" else ["create", "get"]
            out.append({"name": f"{res}/{sub}", "singularName": "", "namespaced": namespaced,
                        "kind": "PodExecOptions" if sub == "exec" else kind, "verbs": verbs})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": out}


def _columns(res: str) -> list[tuple[str, str]]:
    return {
        "pods": [("Name", "string"), ("Ready", "string"), ("Status", "string"), ("Restarts", "string"),
                 ("Age", "string")],
        "secrets": [("Name", "string"), ("Type", "string"), ("Data", "string"), ("Age", "string")],
        "configmaps": [("Name", "string"), ("Data", "string"), ("Age", "string")],
        "namespaces": [("Name", "string"), ("Status", "string"), ("Age", "string")],
        "nodes": [("Name", "string"), ("Status", "string"), ("Roles", "string"), ("Age", "string"),
                  ("Version", "string")],
    }.get(res, [("Name", "string"), ("Age", "string")])


def _cells(res: str, obj: dict[str, Any]) -> list[Any]:
    m = obj["metadata"]
    created = dt.datetime.strptime(m["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()
    age = _age(created)
    if res == "pods":
        cs = obj["status"].get("containerStatuses", [])
        ready = f"{sum(1 for c in cs if c.get('ready'))}/{len(obj['spec']['containers'])}"
        status = "Terminating" if m.get("deletionTimestamp") else obj["status"].get("phase", "Unknown")
        return [m["name"], ready, status, str(sum(c.get("restartCount", 0) for c in cs)), age]
    if res == "secrets":
        return [m["name"], obj.get("type", "Opaque"), str(len(obj.get("data", {}))), age]
    if res == "configmaps":
        return [m["name"], str(len(obj.get("data", {}))), age]
    if res == "namespaces":
        return [m["name"], obj["status"]["phase"], age]
    if res == "nodes":
        return [m["name"], "Ready", "<none>", age, obj["status"]["nodeInfo"]["kubeletVersion"]]
    return [m["name"], age]


def status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    """A ``meta/v1 Status`` (what kubectl prints as ``Error from server (reason): message``)."""
    s: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                         "message": message, "reason": reason, "code": code}
    if details:
        s["details"] = details
    return s


# -- the scripted shell inside every pod -----------------------------------------------------------------------------
class PodShell:
    """A tiny shell: echo (with ``$((a*b))`` and ``$HOSTNAME``), hostname, pwd, cd, ls, cat, id, whoami, uname, env,
    date, true, false, rm, exit [N]; anything else is "not found" (127)."""

    def __init__(self, pod: str):
        self.pod = pod
        self.cwd = "/"
        self.files = {"/etc/hostname": pod + "\n", "/etc/os-release": 'NAME="Simulated Linux"\n',
                      "/data/app.db": "rows\n", "/app/config.yaml": "listen: :8080\n"}
        self.env = {"HOSTNAME": pod, "HOME": "/root", "PATH": "/usr/bin:/bin"}
        self.exited: int | None = None

    def _expand(self, word: str) -> str:
        def arith(m: re.Match[str]) -> str:
            a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
            return str({"+": a + b, "-": a - b, "*": a * b, "/": a // b if b else 0}[op])

        word = re.sub(r"\$\(\(\s*(-?\d+)\s*([-+*/])\s*(-?\d+)\s*\)\)", arith, word)
        return re.sub(r"\$(\w+)|\$\{(\w+)\}", lambda m: self.env.get(m.group(1) or m.group(2), ""), word)

    def run(self, line: str) -> tuple[str, str, int]:
        """Run one line (``;``-separated commands); (stdout, stderr, status)."""
        out, err, rc = [], [], 0
        for part in line.split(";"):
            try:
                argv = [self._expand(w) for w in shlex.split(part)]
            except ValueError as e:
                err.append(f"sh: syntax error: {e}\n")
                rc = 2
                continue
            if not argv:
                continue
            o, e2, rc = self._one(argv)
            out.append(o)
            err.append(e2)
            if self.exited is not None:
                break
        return "".join(out), "".join(err), rc

    def _path(self, p: str) -> str:
        return p if p.startswith("/") else (self.cwd.rstrip("/") + "/" + p)

    def _one(self, argv: list[str]) -> tuple[str, str, int]:
        cmd, args = argv[0], argv[1:]
        if cmd == "exit":
            self.exited = int(args[0]) if args and args[0].isdigit() else 0
            return "", "", self.exited
        if cmd == "echo":
            return " ".join(args) + "\n", "", 0
        if cmd == "hostname":
            return self.pod + "\n", "", 0
        if cmd == "pwd":
            return self.cwd + "\n", "", 0
        if cmd == "cd":
            self.cwd = self._path(args[0]) if args else "/root"
            return "", "", 0
        if cmd in ("id", "whoami"):
            return ("uid=0(root) gid=0(root)\n" if cmd == "id" else "root\n"), "", 0
        if cmd == "uname":
            return "Linux\n", "", 0
        if cmd == "date":
            return time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime()) + "\n", "", 0
        if cmd == "env":
            return "".join(f"{k}={v}\n" for k, v in self.env.items()), "", 0
        if cmd in ("true", ":"):
            return "", "", 0
        if cmd == "false":
            return "", "", 1
        if cmd == "ls":
            d = self._path(args[-1] if args and not args[-1].startswith("-") else self.cwd).rstrip("/") + "/"
            names = sorted({f[len(d):].split("/")[0] for f in self.files if f.startswith(d)})
            return ("  ".join(names) + "\n") if names else "", "", 0
        if cmd == "cat":
            out, err, rc = [], [], 0
            for a in args:
                p = self._path(a)
                if p in self.files:
                    out.append(self.files[p])
                else:
                    err.append(f"cat: can't open '{a}': No such file or directory\n")
                    rc = 1
            return "".join(out), "".join(err), rc
        if cmd == "rm":
            for a in (a for a in args if not a.startswith("-")):
                p = self._path(a).rstrip("/")
                for f in [f for f in self.files if f == p or f.startswith(p + "/")]:
                    del self.files[f]
            return "", "", 0
        return "", f"sh: {cmd}: not found\n", 127


# -- WebSocket framing (RFC 6455, server side) -------------------------------------------------------------------------
class WebSocket:
    """Server side of one WebSocket over a (TLS) socket whose reads go through ``rfile``."""

    def __init__(self, rfile: Any, sock: socket.socket, v5: bool):
        self.rfile, self.sock, self.v5 = rfile, sock, v5
        self.lock = threading.Lock()

    def _read(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if len(data) < n:
            raise EOFError
        return data

    def send(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([n])
        elif n < 65536:
            head += bytes([126]) + struct.pack("!H", n)
        else:
            head += bytes([127]) + struct.pack("!Q", n)
        with self.lock:
            self.sock.sendall(head + payload)

    def channel(self, ch: int, data: bytes) -> None:
        """Send ``data`` on a k8s stream channel (binary frame, first byte the channel)."""
        self.send(0x2, bytes([ch]) + data)

    def recv(self) -> tuple[int, bytes]:
        """The next message (opcode, payload); pings answered; EOFError when the peer is gone or closed."""
        parts: list[bytes] = []
        first_op = 0
        while True:
            b0, b1 = self._read(2)
            op, fin, masked, n = b0 & 0x0F, b0 & 0x80, b1 & 0x80, b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            if n > MAX_BODY:
                raise EOFError
            mask = self._read(4) if masked else b""
            data = self._read(n)
            if masked:
                data = bytes(c ^ mask[i % 4] for i, c in enumerate(data))
            if op == 0x8:
                raise EOFError
            if op == 0x9:
                self.send(0xA, data)
                continue
            if op == 0xA:
                continue
            if op:
                first_op = op
            parts.append(data)
            if fin:
                return first_op, b"".join(parts)

    def close(self, code: int = 1000) -> None:
        try:
            self.send(0x8, struct.pack("!H", code))
        except OSError:
            pass


# -- the server ------------------------------------------------------------------------------------------------------
class KubeSim:
    """The simulated API server. ``token`` and/or ``client_ca`` say who may call it (at least one is required);
    ``requests`` lists every request that reached it: {method, path, query, headers (lower-case), user}."""

    def __init__(self, *, cert: Path, key: Path, token: str | None = None, client_ca: Path | None = None,
                 host: str = "127.0.0.1", port: int = 0, cluster: str = "kubesim"):
        if not token and not client_ca:
            raise ValueError("kubesim needs a token or a client CA")
        self.token, self.cluster = token, cluster
        self.objects = seed_objects()
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert, key)
        if client_ca:
            ctx.load_verify_locations(cafile=str(client_ca))
            ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.set_alpn_protocols(["http/1.1"])
        sim = self

        class Handler(_Handler):
            server_sim = sim

        self.httpd = ThreadingHTTPServer((host, port), Handler, bind_and_activate=False)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True, do_handshake_on_connect=False)
        self.httpd.server_bind()
        self.httpd.server_activate()
        self.port: int = self.httpd.server_address[1]
        self.host = host

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def start(self) -> threading.Thread:
        """Serve in a daemon thread."""
        t = threading.Thread(target=self.serve_forever, name="kubesim", daemon=True)
        t.start()
        return t

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def kubeconfig(self, ca: Path, token: str | None = None, namespace: str = "default") -> str:
        """A kubeconfig (JSON) that points kubectl straight at the simulator (for its own checks)."""
        return json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": self.cluster,
            "clusters": [{"name": self.cluster, "cluster": {"server": f"https://{self.host}:{self.port}",
                                                            "certificate-authority": str(ca)}}],
            "users": [{"name": "admin", "user": {"token": token or self.token}}],
            "contexts": [{"name": self.cluster, "context": {"cluster": self.cluster, "user": "admin",
                                                            "namespace": namespace}}]})


def run_in_thread(**kw: Any) -> tuple[KubeSim, Callable[[], None]]:
    """Start a ``KubeSim(**kw)`` in a thread; (sim, stop)."""
    sim = KubeSim(**kw)
    sim.start()
    return sim, sim.close


class _Handler(BaseHTTPRequestHandler):
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
            return self._send_json(200, _api_resource_list())
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
                                       "description": n, "priority": 0} for n, t in _columns(res)],
                "rows": [{"cells": _cells(res, o), "object": obj(o)} for o in items]}

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
            if self._wants_table():
                return self._send_json(200, self._table(res, [obj], q))  # type: ignore[list-item]
            return self._send_json(200, obj)
        if m == "DELETE" and name:
            with self.server_sim.lock:
                store.pop(name, None)
            assert obj is not None
            obj["metadata"]["deletionTimestamp"] = _ts(time.time())
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
                new["metadata"].update(_meta(new_name, ns if namespaced else None, time.time()))
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
            rc = _run_exec(ws, PodShell(pod), command, stdin=flag("stdin"), tty=flag("tty"))
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


def _run_exec(ws: WebSocket, shell: PodShell, command: list[str], *, stdin: bool, tty: bool) -> int:
    """Run ``command`` in ``shell`` over the stream; the exit status."""
    out = (lambda s: ws.channel(STDOUT, s.replace("\n", "\r\n").encode())) if tty else \
        (lambda s: ws.channel(STDOUT, s.encode()))
    err = out if tty else (lambda s: ws.channel(STDERR, s.encode()))
    interactive = bool(command) and command[0].rsplit("/", 1)[-1] in ("sh", "bash", "ash") and len(command) == 1
    if len(command) >= 3 and command[0].rsplit("/", 1)[-1] in ("sh", "bash") and command[1] == "-c":
        o, e, rc = shell.run(command[2])
        out(o), err(e)
        return rc
    if not interactive:
        if not command:
            err("error: you must specify at least one command for the container\n")
            return 1
        o, e, rc = shell.run(shlex.join(command))
        out(o), err(e)
        return rc
    if not stdin:
        return 0
    line, rc = "", 0
    if tty:
        out(PROMPT)
    for data in _stdin(ws):
        for ch in data.decode("utf-8", "replace"):
            if tty and ch in "\x7f\b":
                if line:
                    line = line[:-1]
                    out("\b \b")
                continue
            if tty and ch == "\x03":
                out("^C\n" + PROMPT)
                line = ""
                continue
            if tty and ch == "\x04" and not line:
                return rc
            if ch in "\r\n":
                if tty:
                    out("\n")
                o, e, rc = shell.run(line)
                out(o), err(e)
                line = ""
                if shell.exited is not None:
                    return shell.exited
                if tty:
                    out(PROMPT)
                continue
            line += ch
            if tty:
                out(ch)
    if line:
        o, e, rc = shell.run(line)
        out(o), err(e)
    return shell.exited if shell.exited is not None else rc


def _stdin(ws: WebSocket) -> Iterator[bytes]:
    """stdin data from the stream until the client closes stdin (v5) or the connection."""
    while True:
        try:
            op, data = ws.recv()
        except EOFError:
            return
        if op not in (0x1, 0x2) or not data:
            continue
        ch, payload = data[0], data[1:]
        if ch == STDIN and payload:
            yield payload
        elif ch == CLOSE and ws.v5 and payload[:1] == bytes([STDIN]):
            return


# -- command line --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """``python -m bastion.demo.kubesim --dir D [--port N]``: TLS material, a token and a kubeconfig in D; serve."""
    ap = argparse.ArgumentParser(prog="python -m bastion.demo.kubesim", description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, required=True, help="where to write ca.crt, the token and kubeconfig")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    tls = make_tls(args.dir / "tls")
    token = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    tok = args.dir / "token"
    tok.touch(mode=0o600)
    tok.write_text(token + "\n")
    sim = KubeSim(token=token, cert=tls.cert, key=tls.key, client_ca=tls.ca, port=args.port)
    (args.dir / "kubeconfig").write_text(sim.kubeconfig(tls.ca))
    print(f"kubesim: https://127.0.0.1:{sim.port} (CA {tls.ca}, token in {tok}, kubeconfig in "
          f"{args.dir / 'kubeconfig'})", flush=True)
    try:
        sim.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
