"""One SSH session channel: the asyncssh callbacks, and the form the client asked for -- the menu (a terminal and
no command), a direct session (``ssh -t bastion RES``) or the exec form (``ssh bastion RES -- CMD``)."""

from __future__ import annotations

import asyncio
import logging
import re
import signal as signals
import time
from typing import Any

import asyncssh

from bastion.context import ConnectionContext
from bastion.rpc.menu import MenuHandlers
from bastion.rpc.process import MenuProcess
from bastion.services import Services
from bastion.sessions.broker import Broker
from bastion.sessions.client import ClientSide
from bastion.sessions.timeouts import IdleWatch, fmt_seconds, time_limit
from bastion.sessions.watch import Elsewhere, NotWatchable, Watch
from bastion.ssh.review import REVIEW_WORDS, ReviewCommands, UsageError
from bastion.ssh.review import USAGE as REVIEW_USAGE
from bastion.ssh.review import parse as parse_review
from bastion.terminal.relay import Relay

log = logging.getLogger(__name__)

TERM_RE = re.compile(r"^[A-Za-z0-9._+-]{1,64}$")
USAGE = """\
bastion: ways to connect
  ssh -t {host} RESOURCE            open RESOURCE interactively (no menu)
  ssh {host} RESOURCE -- COMMAND    run COMMAND on RESOURCE (non-interactive, recorded)
  ssh {host}                        (from a terminal) the menu of the resources you may open
  USER+RESOURCE as the user name    scp, sftp, rsync, git, ansible: e.g. sftp -P PORT alice+web1@HOST
  ssh {host} review                 (reviewers) the requests you may decide; approve N, deny N --reason TEXT
  ssh -t {host} observe SESSION     (reviewers, auditors) watch a live session; moderate it where that is needed
"""

MENU_LEAVE_WAIT = 5.0
"""Seconds the menu has to leave on its own when the bastion closes an idle connection (a loaded machine's Textual
takes a fraction of one)."""
RESTORE_TERMINAL = ("\x1b[<u\x1b[?2004l\x1b[?1000l\x1b[?1003l\x1b[?1015l\x1b[?1006l\x1b[?1004l\x1b[?7h\x1b[0m"
                    "\x1b[?1049l\x1b[?25h")
"""What Textual writes when it leaves (keyboard protocol, bracketed paste, mouse reporting and focus events off,
line wrap on, attributes reset, the normal screen back, the cursor shown): written for a menu hung up on its
screen, before the closing message."""


def parse_command(command: str) -> tuple[str, str | None]:
    """Split ``RES -- CMD`` (or ``RES CMD``) into the resource and the command text, verbatim."""
    text = command.strip()
    m = re.match(r"(\S+)(?:\s+(.*))?$", text, re.S)
    if not m:
        return "", None
    res, rest = m.group(1), (m.group(2) or "").strip()
    if rest.startswith("--"):
        rest = rest[2:].strip() if rest == "--" or rest[2:3].isspace() else rest
    return res, (rest or None)


def not_utf8(command: str) -> str | None:
    """Why an exec request's command (as :class:`BastionChannel` passes it) is not valid UTF-8, or None if it is."""
    raw = command.encode("utf-8", "surrogateescape")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"byte 0x{raw[e.start]:02x} at offset {e.start}"
    return None


class BastionChannel(asyncssh.SSHServerChannel[bytes]):  # encoding=None: a channel of bytes
    """A server session channel whose exec request reaches the session even when its command is not UTF-8.

    asyncssh answers such a request with a bare channel failure before the session hears of it (OpenSSH prints
    "exec request failed" and exits 255, the daemon logs nothing). Here the command is decoded with
    ``surrogateescape``, and the session refuses it with a reason and an exit status, like any other refusal."""

    def _process_exec_request(self, packet: Any) -> bool:
        command = packet.get_string()
        packet.check_end()
        # asyncssh's own handler has the same shape; this override only changes how the bytes are decoded
        return bool(self._start_session(command=command.decode("utf-8", "surrogateescape")))


class BastionSession(asyncssh.SSHServerSession[bytes]):
    """asyncssh session callbacks for one channel; the work happens in :meth:`_run`."""

    def __init__(self, services: Services, ctx: ConnectionContext):
        self.services, self.ctx = services, ctx
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.client: ClientSide | None = None
        self.term_type: str | None = None
        self.cols, self.rows = 80, 24
        self.command: str | None = None
        self.subsystem: str | None = None
        self.menu: MenuProcess | None = None
        self.handlers: MenuHandlers | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.Task[None] | None = None
        self._closed_reason: str | None = None  # the bastion closed this connection (idle): why
        self._menu_exited = asyncio.Event()  # the menu's session process is gone
        self._restore_terminal = False  # the menu was killed on its screen: give the terminal back here

    # -- asyncssh callbacks -----------------------------------------------------------------------------
    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Any) -> bool:
        self.term_type = term_type if TERM_RE.match(term_type or "") else "xterm-256color"
        self.cols, self.rows = _sane_size(term_size[0], term_size[1])
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self.command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        """Only ``sftp``, and only with the target in the user name (``alice+web1``): there is no menu to pick
        a target from. Judged at the protocol, request by request (:mod:`bastion.proxies.sftp`)."""
        if subsystem == "sftp" and self.ctx.target is not None:
            self.subsystem = subsystem
            return True
        log.info("%s: refused subsystem %r%s", self.ctx.who, subsystem[:64],
                 "" if self.ctx.target is not None else " (no target in the user name, as in USER+RESOURCE)")
        return False

    def session_started(self) -> None:
        assert self.chan is not None
        relay = Relay(self.chan, self.cols, self.rows)
        self.client = ClientSide(self.chan, relay, self.term_type, self.cols, self.rows)
        self._task = asyncio.get_running_loop().create_task(self._run_guarded())
        if self.term_type is not None:  # without a terminal (scripts, agents) input may never come
            watch = IdleWatch(relay, self._idle_timeout, self._idle_warn, self._idle_close)
            self._idle = asyncio.get_running_loop().create_task(watch.run())

    def data_received(self, data: bytes, datatype: int | None) -> None:
        if self.client is not None:
            self.client.relay.from_client(data)

    def eof_received(self) -> bool:
        if self.client is not None:
            self.client.relay.eof()
        return True

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self.cols, self.rows = _sane_size(width, height)
        if self.client is not None:
            self.client.cols, self.client.rows = self.cols, self.rows
            self.client.relay.resize(self.cols, self.rows)

    def signal_received(self, signal: str) -> None:
        if self.client is not None:
            self.client.relay.signal(signal)

    def break_received(self, msec: int) -> bool:
        if self.client is not None:
            self.client.relay.send_break(msec)
        return True

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.relay.pause_output()

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.relay.resume_output()

    def connection_lost(self, exc: Exception | None) -> None:
        # No cancellation: closing the endpoints makes _run finish normally, so every session is closed in the
        # store and its recording hashed even when the client vanishes.
        if self._idle is not None:
            self._idle.cancel()
        if self.handlers is not None:
            self.handlers.signin.hung_up()  # a sign-in of a vanished client never completes (nor binds its key)
        if self.client is not None:
            self.client.hung_up()
        if self.menu is not None:
            self.menu.close()

    # -- the forms --------------------------------------------------------------------------------------
    async def _run_guarded(self) -> None:
        assert self.client is not None and self.chan is not None
        status = 1
        try:
            status = await self._run(self.client)
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("%s: session failed", self.ctx.who)
            self.client.stderr("bastion: internal error; the session was closed (see the daemon log)\n")
        if self._idle is not None:
            self._idle.cancel()
        if self._closed_reason is not None:
            self.client.stderr((RESTORE_TERMINAL if self._restore_terminal else "")
                               + f"\nbastion: {self._closed_reason}: connection closed\n")
        if not self.client.gone:
            try:
                self.chan.exit(status)
            except (OSError, asyncssh.Error):  # gone between the last write and the exit status
                self.client.gone = True

    async def _run(self, client: ClientSide) -> int:
        ctx, broker = self.ctx, Broker(self.services, self.ctx, client)
        if ctx.target is not None:
            return await self._run_target(client, broker, ctx.target)
        if self.command is None:
            if not client.pty:
                client.stderr(USAGE.format(host=ctx.server_name))
                return 2
            return await self._menu(client, broker)
        if ctx.pending_login:
            client.stderr("bastion: this key is not signed in. Sign in first, with a terminal: "
                          f"ssh {ctx.server_name}\n"
                          "(after that, this key works without a sign-in until its binding expires)\n")
            return 1
        if not await self._utf8(client, self.command):
            return 1
        resource, cmd = parse_command(self.command)
        if not resource or resource in ("help", "-h", "--help"):
            client.stderr(USAGE.format(host=ctx.server_name))
            return 0 if resource else 2
        if resource in REVIEW_WORDS:
            return await self._review(client, broker, resource, cmd)
        if resource == "observe":
            return await self._observe(client, cmd)
        if cmd is None and not client.pty:
            client.stderr(f"bastion: {resource}: an interactive session needs a terminal (ssh -t).\n"
                          + USAGE.format(host=ctx.server_name))
            return 2
        return await self._open(client, broker, resource, cmd)

    async def _menu(self, client: ClientSide, broker: Broker, start: dict[str, Any] | None = None) -> int:
        """The Textual menu on the client's terminal (``start``: the screen it opens on, e.g. a request's)."""
        self.handlers = MenuHandlers(self.services, self.ctx, client, broker, start=start)
        self.menu = MenuProcess(self.services, client, self.handlers.table(), self.ctx.who)
        try:
            return await self.menu.run()
        finally:
            self._menu_exited.set()

    async def _review(self, client: ClientSide, broker: Broker, word: str, rest: str | None) -> int:
        """``review``, ``approve N``, ``deny N --reason TEXT`` (:mod:`bastion.ssh.review`); ``review [N]`` with a
        terminal opens the queue screen (on request N)."""
        try:
            cmd = parse_review(word, rest)
        except UsageError as e:
            client.stderr(f"bastion: {e}\n" + REVIEW_USAGE.format(host=self.ctx.server_name))
            return 2
        if cmd.word == "review" and client.pty and not cmd.json and self.ctx.grants.review:
            return await self._menu(client, broker, start={"screen": "approvals", "request": cmd.request})
        status, out, err = await ReviewCommands(self.services.approvals, self.ctx, self.ctx.server_name).run(cmd)
        if out:
            client.stdout(out)
        if err:
            client.stderr(err)
        return status

    async def _observe(self, client: ClientSide, rest: str | None) -> int:
        """``ssh -t bastion observe SESSION``: watch a live session read-only (and, on a moderated resource, count
        as its moderator), as F4 does."""
        sid = (rest or "").strip()
        if not client.pty or not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", sid):
            client.stderr(f"bastion: usage: ssh -t {self.ctx.server_name} observe SESSION "
                          "(a terminal, and the id of a live session: F4 lists them)\n")
            return 2
        if not self.ctx.grants.review and not self.ctx.grants.audit:
            client.stderr("bastion: observing live sessions is for reviewers and auditors\n")
            return 1
        client.opening = True
        try:
            title, reason = await Watch(self.services, self.ctx).observe_id(client, sid)
        except (NotWatchable, Elsewhere) as e:
            client.stderr(f"bastion: {e}\n")
            return 1
        finally:
            client.opening = False
        client.stderr(f"\r\n\x1b[0mbastion: stopped observing {title}: {reason}\n")
        return 0

    async def _run_target(self, client: ClientSide, broker: Broker, resource: str) -> int:
        """``ssh USER+RESOURCE@bastion``: the shell (with a terminal), the command, or sftp, on RESOURCE."""
        ctx = self.ctx
        if ctx.pending_login:
            client.stderr("bastion: this key is not signed in. Sign in first, with a terminal: "
                          f"ssh {ctx.server_name}\n")
            return 1
        if self.subsystem is not None:
            return await self._open(client, broker, resource, None, subsystem=self.subsystem)
        if self.command is not None and not await self._utf8(client, self.command):
            return 1
        if self.command is not None and not self.command.strip():  # a target would start a shell, unjudged
            client.stderr(f"bastion: {resource}: an empty command; nothing was run\n")
            return 2
        if self.command is None and not client.pty:
            client.stderr(f"bastion: {resource}: an interactive session needs a terminal (ssh -t).\n")
            return 2
        return await self._open(client, broker, resource, self.command)

    async def _open(self, client: ClientSide, broker: Broker, resource: str, cmd: str | None,
                    subsystem: str | None = None) -> int:
        """Open ``resource`` and wait for its end; the exit status for the client."""
        ctx = self.ctx
        out = await broker.open(resource, command=cmd, subsystem=subsystem)
        if not out.ok:
            client.stderr(f"bastion: {out.message}\n")
            if client.gone:  # a hang-up (Ctrl-C, a killed client) while held or refused is normal
                log.info("%s: %s: the client hung up before it was told: %s", ctx.who, resource[:64], out.message)
            return 1
        if out.exit_signal:
            return 128 + _signal_number(out.exit_signal)
        return out.exit_status if out.exit_status is not None else 255

    async def _utf8(self, client: ClientSide, command: str) -> bool:
        """An exec request's command must be UTF-8: else refused, said and audited."""
        bad = not_utf8(command)
        if bad is None:
            return True
        ctx = self.ctx
        text = command.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        log.info("%s: refused an exec request whose command is not valid UTF-8 (%s): %r", ctx.who, bad, text[:200])
        await asyncio.to_thread(self.services.store.audit, ctx.username, "session.open", "denied",
                                client_addr=ctx.peer, mode="exec", text=text[:4000],
                                reason=f"the command is not valid UTF-8 ({bad})")
        client.stderr(f"bastion: the command is not valid UTF-8 ({bad}); nothing was run\n")
        return False

    # -- idle connections ---------------------------------------------------------------------------------
    def _idle_timeout(self) -> float | None:
        """The idle timeout now: that of the open session's resource, else the daemon's."""
        live = self.client.live if self.client is not None else None
        return time_limit(self.services.config, live.resource if live is not None else None, "idle_timeout")

    def _idle_warn(self, left: float) -> None:
        text = f"no input for a while: this connection closes in {fmt_seconds(left)} unless you type something"
        if self.client is not None and self.client.live is not None:
            self.client.live.notify(text)
        elif self.menu is not None:
            self.menu.notify("notice", {"text": text})

    def _idle_close(self) -> None:
        timeout = self._idle_timeout() or 0
        self._closed_reason = f"no input for {fmt_seconds(timeout)}"
        log.info("%s: closing the connection: %s", self.ctx.who, self._closed_reason)
        self.services.spawn(self._close_idle(self._closed_reason))

    async def _close_idle(self, reason: str) -> None:
        """End what this connection carries (a brokered session first, recorded as idle), then its menu."""
        ctx, client = self.ctx, self.client
        await asyncio.to_thread(self.services.store.audit, ctx.username, "connection.idle", "closed",
                                client_addr=ctx.peer, reason=reason)
        if client is None:
            return
        if client.live is not None:
            client.live.expire("idle", reason)
            deadline = time.monotonic() + 30
            while client.live is not None and time.monotonic() < deadline:  # until it is closed in the store
                await asyncio.sleep(0.05)
        if client.observer is not None:
            client.observer.finish(reason)
        if self.menu is not None:
            await self._close_menu(self.menu, client, reason)

    async def _close_menu(self, menu: MenuProcess, client: ClientSide, reason: str) -> None:
        """Ask the menu to leave, and let it: Textual then gives the terminal back as it found it (alternate screen
        left, cursor shown, mouse reporting and bracketed paste off), and the closing message lands on a clean
        line below. Hung up at once, it left its screen drawn and the message over its second row. A menu that
        does not go in time is hung up; then, unless it had handed the terminal over (a session, an observer or a
        replay occupies the channel: it is off its screen), the terminal is given back here."""
        menu.notify("close", {"text": reason})
        try:
            await asyncio.wait_for(self._menu_exited.wait(), MENU_LEAVE_WAIT)
        except TimeoutError:
            log.info("%s: the menu did not leave within %.0f s; hanging it up", self.ctx.who, MENU_LEAVE_WAIT)
            self._restore_terminal = not client.opening
            menu.close()


def _sane_size(cols: int, rows: int) -> tuple[int, int]:
    cols = cols if 0 < cols <= 1000 else 80
    rows = rows if 0 < rows <= 1000 else 24
    return cols, rows


def _signal_number(name: str) -> int:
    try:
        return int(getattr(signals, f"SIG{name}"))
    except (AttributeError, TypeError):
        return 0
