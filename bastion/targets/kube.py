"""Kubernetes targets: the kubectl prompt (or one kubectl line, in the exec form) in the session sandbox, talking
only to this session's API proxy, which holds the real credential and judges every request.

The prompt (``bastion/targets/kubeprompt.py``) runs with the system Python inside the sandbox; it hands the daemon a
listening socket made in the sandbox's network namespace, the proxy serves TLS on it, and the daemon writes a
kubeconfig (proxy certificate as CA, a throwaway token) into the session's private home.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

import policies.kubectl as kubectl_line_module
from bastion.config import KubeResource
from bastion.config.resources import AnyResource as Resource
from bastion.proxies.kube.proxy import KubeProxy, Upstream
from bastion.proxies.kube.tls import upstream_context
from bastion.sandbox import Sandbox, find_kubectl
from bastion.targets.base import LineFilter, OpenRequest, Proxied, TargetError
from bastion.targets.local import LocalClient
from bastion.terminal.relay import Relay
from policies.kubectl import KubectlLineError, kubectl_argv

HERE = Path(__file__).resolve().parent
PROMPT_SRC = HERE / "kubeprompt.py"
LINE_SRC = Path(kubectl_line_module.__file__)
HANDOFF_TIMEOUT = 15.0


def kubectl_minor(path: str) -> int | None:
    """The client's minor version (33 for 1.33), or None when ``path`` is not a working kubectl."""
    import json
    import subprocess

    try:
        out = subprocess.run([path, "version", "--client", "-o", "json"], capture_output=True, text=True,
                             timeout=30)
        minor = json.loads(out.stdout)["clientVersion"]["minor"]
        return int("".join(c for c in minor if c.isdigit()))
    except (OSError, ValueError, KeyError, TypeError, subprocess.TimeoutExpired):
        return None


def system_python(sandbox: Sandbox) -> str:
    """The interpreter for the prompt: the system's inside the sandbox (it sees only /usr), ours otherwise."""
    if sandbox.active:
        for p in ("/usr/bin/python3", "/usr/local/bin/python3"):
            if os.access(p, os.X_OK):
                return p
        raise TargetError("kubernetes resources need python3 in /usr on the bastion (for the kubectl prompt)")
    return sys.executable


def make_upstream(res: KubeResource, resolve: Callable[[str], Path], user: str, groups: tuple[str, ...]) -> Upstream:
    """The real API server of ``res`` with its credential loaded from the configured files."""
    u = urlsplit(res.server)
    cred = res.credential
    try:
        token = resolve(cred.token_file).read_text().strip() if cred.token_file else None
        ctx = upstream_context(resolve(res.ca_file) if res.ca_file else None,
                               resolve(cred.client_cert_file) if cred.client_cert_file else None,
                               resolve(cred.client_key_file) if cred.client_key_file else None)
    except (OSError, ValueError) as e:
        raise TargetError(f"the bastion cannot load this resource's credential ({type(e).__name__}; "
                          "see daemon log)") from None
    host = (u.hostname or "").strip("[]")
    return Upstream(host, u.port or 443, ctx, token, user if res.impersonate else None,
                    groups if res.impersonate else ())


class KubectlExec(LocalClient):
    """The kubectl prompt on its own pty (``command`` None) or one kubectl line with pipes (stdin passed on)."""

    label = "kubectl"
    proxied: ClassVar[Proxied | None] = "kube"

    def __init__(self, relay: Relay):
        super().__init__(relay)
        self.proxy: KubeProxy | None = None
        self.terminal = False  # the operator has a terminal (ssh -t): its lines end in CR LF

    @staticmethod
    def line_filter(res: Resource, command: str | None, pty: bool) -> LineFilter | None:
        """None: every request is judged at the API proxy, whatever was typed."""
        return None

    async def open(self, req: OpenRequest) -> None:
        res, name, command, sandbox, hooks = req.resource, req.name, req.command, req.sandbox, req.hooks
        assert isinstance(res, KubeResource) and hooks is not None
        if command is None and not req.pty:
            raise TargetError("the kubectl prompt needs a terminal (ssh -t)")
        resolve, kubectl = req.config.resolve, req.config.kubectl
        self.terminal = req.pty
        term_type, cols, rows = req.term_type, req.cols, req.rows
        if command is not None:
            try:
                kubectl_argv(command)
            except KubectlLineError as e:
                raise TargetError(str(e)) from None
        binary = find_kubectl(kubectl)
        if binary is None:
            raise TargetError("kubectl is not installed on the bastion")
        python = system_python(sandbox)
        upstream = make_upstream(res, resolve, req.user, req.groups)
        self.proxy = KubeProxy(upstream, judge=hooks.judge, hold=hooks.hold, note=hooks.note,
                               withdraw=hooks.withdraw, event=hooks.event, say=self._say)
        self.home = Path(tempfile.mkdtemp(prefix="bastion-kube-"))
        sandbox.prepare(self.home)
        lib = self.home / "lib"
        lib.mkdir()
        shutil.copyfile(PROMPT_SRC, lib / "kubeprompt.py")
        shutil.copyfile(LINE_SRC, lib / "kubectl_line.py")
        handoff = self.home / "handoff.sock"
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(str(handoff))
        srv.listen(1)
        sandbox.prepare(handoff)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.home), "LANG": "C.UTF-8", "TERM": term_type,
               "PYTHONDONTWRITEBYTECODE": "1", "EDITOR": "/bin/false", "VISUAL": "/bin/false",
               "SHELL": "/bin/false"}
        argv = [python, "-I", "-S", "-B", str(lib / "kubeprompt.py"), "--handoff", str(handoff), "--kubectl", binary,
                "--resource", name, "--namespace", res.namespace]
        try:
            if command is None:
                self._spawn_pty(argv, env, sandbox, cols, rows)
            else:
                await self._spawn_pipes([*argv, "--command", command], env, sandbox, stdin=True)
            conn, listener = await asyncio.to_thread(self._accept_listener, srv)
        finally:
            srv.close()
            handoff.unlink(missing_ok=True)
        await self.proxy.serve(listener)
        cfg = self.home / "kubeconfig"
        fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.proxy.kubeconfig(res.namespace, cluster=name))
        sandbox.prepare(cfg)
        (self.home / ".kube").mkdir(exist_ok=True)
        sandbox.prepare(self.home / ".kube")
        try:
            conn.sendall(f"ok {cfg}\n".encode())
        except OSError:
            pass
        finally:
            conn.close()

    def _say(self, text: str) -> None:
        """The bastion's line to the operator, recorded: on the prompt's terminal, or on the exec form's stderr."""
        if self.pty is not None:
            self.relay.say(f"\x1b[1;33mbastion: {text}\x1b[0m\r\n".encode())
        else:
            end = "\r\n" if self.terminal else "\n"
            self.relay.output(self, f"bastion: {text}{end}".encode(), stderr=True)

    def _alive(self) -> bool:
        if self._exited is not None:
            return not self._exited.done()
        return self.proc is not None and self.proc.returncode is None

    def _accept_listener(self, srv: socket.socket) -> tuple[socket.socket, socket.socket]:
        """(thread) The prompt's one message: a listening TCP socket passed as a file descriptor (SCM_RIGHTS)."""
        srv.settimeout(0.2)
        deadline = time.monotonic() + HANDOFF_TIMEOUT
        while True:
            try:
                conn, _ = srv.accept()
                break
            except TimeoutError:
                if time.monotonic() > deadline or not self._alive():
                    raise TargetError("the kubectl prompt did not start (see the daemon log)") from None
        conn.settimeout(5)
        try:
            _msg, fds, _flags, _addr = socket.recv_fds(conn, 64, 1)
        except OSError:
            conn.close()
            raise TargetError("the kubectl prompt did not hand over its socket") from None
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            conn.close()
            raise TargetError("the kubectl prompt did not hand over its socket")
        listener = socket.socket(fileno=fds[0])
        if listener.family != socket.AF_INET or listener.type != socket.SOCK_STREAM:
            listener.close()
            conn.close()
            raise TargetError("the kubectl prompt handed over something else than a TCP listener")
        return conn, listener

    def close(self) -> None:
        super().close()
        if self.proxy is not None:
            asyncio.ensure_future(self.proxy.close())
