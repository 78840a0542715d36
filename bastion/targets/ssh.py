"""SSH targets: the remote process opened by an asyncssh client with the key held in the daemon's memory only."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import ClassVar

import asyncssh

from bastion.config import Config, SshResource
from bastion.config.resources import AnyResource as Resource
from bastion.keyfiles import CIPHERS
from bastion.targets.base import LineFilter, OpenRequest, Proxied, TargetError, TargetExit
from bastion.terminal.relay import Relay

log = logging.getLogger(__name__)


class _ClientSession(asyncssh.SSHClientSession):
    def __init__(self, ep: SshEndpoint):
        self.ep = ep

    def data_received(self, data: bytes, datatype: int | None) -> None:
        self.ep.received(data, datatype == asyncssh.EXTENDED_DATA_STDERR)

    def exit_status_received(self, status: int) -> None:
        self.ep.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.ep.exit_signal = signal

    def pause_writing(self) -> None:
        self.ep.relay.chan.pause_reading()

    def resume_writing(self) -> None:
        self.ep.relay.chan.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.ep.lost_reason = str(exc) if exc else ""
        self.ep.closed.set()


class SshEndpoint:
    """A relay endpoint that is a process on an SSH target."""

    proxied: ClassVar[Proxied | None] = None
    subsystem: ClassVar[str | None] = None  # a subsystem instead of a shell or a command (``sftp``)

    def __init__(self, relay: Relay):
        self.relay = relay
        self.conn: asyncssh.SSHClientConnection | None = None
        self.chan: asyncssh.SSHClientChannel | None = None
        self.exit_status: int | None = None
        self.exit_signal: str | None = None
        self.lost_reason = ""
        self.closed = asyncio.Event()
        self._paused = False
        self.pty = False

    @staticmethod
    def line_filter(res: Resource, command: str | None, pty: bool) -> LineFilter | None:
        """A shell typed into on a terminal, on a resource with a policy: the interactive filter reads its lines."""
        return "shell" if command is None and pty and res.policy else None

    async def open(self, req: OpenRequest) -> None:
        """Connect with the pinned host key and the resource's key, and start a shell or the command."""
        res = req.resource
        assert isinstance(res, SshResource)
        term_type, cols, rows = req.term_type, req.cols, req.rows
        command, pty = self._remote(req, res)
        self.pty = req.pty
        self.conn = await connect(req.config, res)
        try:
            if self.subsystem:
                self.chan, _ = await self.conn.create_session(lambda: _ClientSession(self),
                                                              subsystem=self.subsystem, encoding=None)
            else:
                self.chan, _ = await self.conn.create_session(
                    lambda: _ClientSession(self), command, term_type=term_type if pty else None,
                    term_size=(cols, rows, 0, 0) if pty else None, request_pty=pty, encoding=None,
                    x11_forwarding=False)
        except (OSError, asyncssh.Error) as e:
            self.conn.close()
            raise TargetError(f"the target refused a session: {e}") from None

    def _remote(self, req: OpenRequest, res: SshResource) -> tuple[str | None, bool]:
        """What the target runs (None: the login shell) and whether it gets a pty: what the operator asked for."""
        return req.command, req.pty

    async def wait(self) -> TargetExit:
        """Wait until the remote process ends and the connection is closed."""
        await self.closed.wait()
        if self.conn is not None:
            self.conn.close()
        if self.exit_status is not None:
            return TargetExit(self.exit_status, None, f"exited with status {self.exit_status}")
        if self.exit_signal is not None:
            return TargetExit(None, self.exit_signal, f"killed by signal {self.exit_signal}")
        reason = f": {self.lost_reason}" if self.lost_reason else ""
        return TargetExit(None, None, f"connection to the target lost{reason}")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def received(self, data: bytes, stderr: bool) -> None:
        """Bytes from the target, on their way to the operator."""
        self.relay.output(self, data, stderr=stderr)

    # -- Endpoint protocol ------------------------------------------------------------------------------
    def _on_chan(self, op: Callable[[asyncssh.SSHClientChannel], object]) -> None:
        """Apply ``op`` to the open channel; a channel closing under us is not an error."""
        if self.chan is not None and not self.closed.is_set():
            try:
                op(self.chan)
            except (asyncssh.Error, OSError):
                pass

    def write(self, data: bytes) -> None:
        self._on_chan(lambda c: c.write(data))

    def resize(self, cols: int, rows: int) -> None:
        self._on_chan(lambda c: c.change_terminal_size(cols, rows))

    def signal(self, name: str) -> None:
        self._on_chan(lambda c: c.send_signal(name))

    def send_break(self, msec: int) -> None:
        self._on_chan(lambda c: c.send_break(msec))

    def eof(self) -> None:
        self._on_chan(lambda c: c.write_eof())

    def pending(self) -> int:
        return self.chan.get_write_buffer_size() if self.chan is not None else 0

    def echo_known(self) -> bool | None:
        # Without a pty, stdin is data (a script piped in), recorded as is. With one, the remote termios is
        # invisible over SSH: the recorder infers echo from the output.
        return None if self.pty else True

    def pause_reading(self) -> None:
        if self.chan is not None and not self._paused:
            self._paused = True
            self.chan.pause_reading()

    def resume_reading(self) -> None:
        if self.chan is not None and self._paused:
            self._paused = False
            self.chan.resume_reading()


async def connect(config: Config, res: SshResource) -> asyncssh.SSHClientConnection:
    """A connection to an ssh resource with the pinned host key and the resource's key (held in memory only for
    the handshake); :class:`TargetError` with a message for the operator when it cannot be made."""
    key_path = config.resolve(res.credential.private_key_file)
    timeout = config.limits.target_connect_timeout
    try:
        key = asyncssh.read_private_key(str(key_path))
    except (OSError, ValueError, asyncssh.KeyImportError) as e:
        log.error("cannot load credential for %s from %s: %s", res.host, key_path, e)
        raise TargetError("the bastion cannot load this resource's credential (see daemon log)") from None
    try:
        return await asyncio.wait_for(asyncssh.connect(
            res.host, res.port, username=res.user, client_keys=[key],
            known_hosts=([asyncssh.import_public_key(res.host_key)], [], []),
            agent_path=None, agent_forwarding=False, x11_forwarding=False, config=[],
            preferred_auth="publickey", keepalive_interval=30, ignore_encrypted=True,
            password_auth=False, kbdint_auth=False, gss_auth=False, host_based_auth=False,
            connect_timeout=timeout, encryption_algs=CIPHERS), timeout + 1)
    except asyncssh.HostKeyNotVerifiable:
        log.error("host key of %s:%s does not match the pinned key", res.host, res.port)
        raise TargetError("the target's host key does not match the pinned key; refusing to connect") from None
    except asyncssh.PermissionDenied:
        raise TargetError("the target refused the bastion's credential") from None
    except TimeoutError:
        raise TargetError(f"cannot connect to the target: no answer within {timeout:g} s") from None
    except (OSError, asyncssh.Error) as e:
        raise TargetError(f"cannot connect to the target: {str(e) or type(e).__name__}") from None
    finally:
        del key
