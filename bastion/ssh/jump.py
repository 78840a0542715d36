"""``ssh -J alice@bastion deploy@web1``, brokered rather than tunnelled.

A jump host forwards opaque TCP: what the operator then does on ``web1`` is encrypted end to end, unjudged and
unrecorded, and the operator must hold web1's credential. Here a ``direct-tcpip`` request whose destination is a
resource the user may open (by name, or by its host and port when exactly one resource has them) is not
forwarded: the bastion serves SSH itself on that channel (an inner connection, over a socket pair), authenticates
it by a key of the same user, and serves it exactly like ``alice+web1``: shell, exec and sftp, filtered, held and
recorded, while the bastion logs into the target with the vaulted credential. The inner server shows a host
certificate for the resource's names signed by the bastion's host CA (``bastion ca`` prints the known_hosts line),
so ``StrictHostKeyChecking=yes`` holds without a key per host.

Any other destination is refused like an unknown resource (the same message, audited); forwarding to anything
else (``-L``, ``-D``, ``-R``) stays off.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import asyncssh

from bastion.config import Config, SshResource
from bastion.context import ConnectionContext
from bastion.services import Services
from bastion.ssh.admission import ConnectionCounter, UserKeys

log = logging.getLogger(__name__)
CERT_LIFETIME = 24 * 3600.0


def known_hosts_line(config: Config, public_key: str) -> str:
    """``@cert-authority`` for the names a ``-J`` destination may be given by: each ssh resource's name and host
    (the certificate of each inner connection names the resource it serves)."""
    names = sorted({n for name, r in config.resources.items() if isinstance(r, SshResource)
                    for n in (name, r.host)})
    return f"@cert-authority {','.join(names) or '*'} {public_key.strip()}"


class JumpHost:
    """What a connection needs to serve ``-J``: the host key, the host CA, and the server options."""

    def __init__(self, services: Services, host_key: asyncssh.SSHKey, ca_key: asyncssh.SSHKey,
                 options: dict[str, Any], keys: Callable[[], UserKeys]):
        self.services, self.host_key, self.ca_key = services, host_key, ca_key
        self.options, self.keys = options, keys

    def destination(self, host: str, port: int) -> str | None:
        """The resource a ``direct-tcpip`` destination names: its name (port 22 or its own), or its host and port
        when exactly one ssh resource has them; None for anything else."""
        resources = self.services.config.resources
        res = resources.get(host)
        if isinstance(res, SshResource) and port in (22, res.port):
            return host
        named = [n for n, r in resources.items() if isinstance(r, SshResource) and r.host == host and r.port == port]
        return named[0] if len(named) == 1 else None

    def certificate(self, name: str) -> asyncssh.SSHCertificate:
        """A host certificate for resource ``name`` (its name and its host), signed by the bastion's host CA."""
        res = self.services.config.resources[name]
        principals = sorted({name, res.host if isinstance(res, SshResource) else name})
        now = time.time()
        return self.ca_key.generate_host_certificate(self.host_key, f"bastion -J {name}", principals=principals,
                                                     valid_after=int(now - 300),
                                                     valid_before=int(now + CERT_LIFETIME))

    def bridge(self, outer: ConnectionContext, name: str) -> InnerBridge:
        """The channel's session: an inner SSH server for ``name``, acting for the outer connection's user."""
        from bastion.ssh.server import InnerServer  # the server module builds JumpHost's callers: no cycle at import

        options = {**self.options, "server_host_keys": [self.host_key],
                   "server_host_certs": [self.certificate(name)]}

        async def serve(sock: socket.socket) -> None:
            conn = await asyncssh.run_server(
                sock, server_factory=lambda: InnerServer(self.services, ConnectionCounter(), self.keys, outer, name),
                **options)
            await conn.wait_closed()

        return InnerBridge(serve, f"{outer.who} -J {name}")


class InnerBridge(asyncssh.SSHTCPSession[bytes]):
    """The ``direct-tcpip`` channel's bytes, to and from an inner SSH server on the other end of a socket pair."""

    def __init__(self, serve: Callable[[socket.socket], Any], who: str):
        self._serve, self.who = serve, who
        self._ours, self._theirs = socket.socketpair()
        self._chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self._pipe: asyncio.Transport | None = None
        self._early: list[bytes] = []
        self._eof = False
        self._tasks: list[asyncio.Task[Any]] = []
        self.on_close: Callable[[], None] | None = None  # the connection counts its forwarded channels

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self._chan = chan
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._start()))

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._ours.setblocking(False)
        self._theirs.setblocking(False)
        transport, _ = await loop.create_connection(lambda: _Pipe(self), sock=self._ours)
        self._pipe = transport
        for data in self._early:
            transport.write(data)
        self._early.clear()
        if self._eof and transport.can_write_eof():
            transport.write_eof()
        self._tasks.append(loop.create_task(self._run_inner()))

    async def _run_inner(self) -> None:
        try:
            await self._serve(self._theirs)
        except (OSError, asyncssh.Error) as e:
            log.info("%s: the inner connection ended: %s", self.who, e)
        except Exception:
            log.exception("%s: the inner connection failed", self.who)
        finally:
            self._theirs.close()
            if self._chan is not None:
                self._chan.close()

    def data_received(self, data: bytes, datatype: int | None) -> None:
        if self._pipe is None:
            self._early.append(data)
        else:
            self._pipe.write(data)

    def eof_received(self) -> bool:
        self._eof = True
        if self._pipe is not None and self._pipe.can_write_eof():
            self._pipe.write_eof()
        return True

    def pause_writing(self) -> None:
        if self._pipe is not None:
            self._pipe.pause_reading()

    def resume_writing(self) -> None:
        if self._pipe is not None:
            self._pipe.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._pipe is not None:
            self._pipe.close()
        else:
            self._ours.close()
        if self.on_close is not None:
            self.on_close()
            self.on_close = None


class _Pipe(asyncio.Protocol):
    """The socket pair's near end: what the inner server writes goes out on the channel."""

    def __init__(self, bridge: InnerBridge) -> None:
        self.bridge = bridge

    def data_received(self, data: bytes) -> None:
        chan = self.bridge._chan
        if chan is not None:
            try:
                chan.write(data)
            except (OSError, asyncssh.Error):
                pass

    def eof_received(self) -> bool:
        chan = self.bridge._chan
        if chan is not None:
            try:
                chan.write_eof()
            except (OSError, asyncssh.Error):
                pass
        return True

    def pause_writing(self) -> None:
        if self.bridge._chan is not None:
            self.bridge._chan.pause_reading()

    def resume_writing(self) -> None:
        if self.bridge._chan is not None:
            self.bridge._chan.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.bridge._chan is not None:
            self.bridge._chan.close()
