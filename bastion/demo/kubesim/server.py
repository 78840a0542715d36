"""The simulated API server itself (TLS, a thread per connection) and ``python -m bastion.demo.kubesim``."""

from __future__ import annotations

import argparse
import base64
import json
import ssl
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bastion.demo.devcerts import ServerCert, make_client_cert, make_server_cert
from bastion.demo.kubesim.cluster import seed_objects
from bastion.demo.kubesim.handler import ApiHandler


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

        class Handler(ApiHandler):
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


def main(argv: list[str] | None = None) -> int:
    """``python -m bastion.demo.kubesim --dir D [--port N]``: TLS material, a token and a kubeconfig in D; serve."""
    from bastion.demo import kubesim  # its docstring describes the simulator

    ap = argparse.ArgumentParser(prog="python -m bastion.demo.kubesim",
                                 description=(kubesim.__doc__ or "").split("\n")[0])
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
