"""An ssh target whose session runs under bastion-guard (``enforce: guard``; docs/guard.md).

The target runs ``bastion-guard --session ID`` on a channel without a pty; the operator's command, terminal type and
size travel in the first frame, so nothing the operator typed is ever on the target's command line. Every byte
either way is a frame: the operator's input and the session's output, and, from the guard, one report per program
the session executes, stopped until the daemon's verdict. The session's processes see only the pty or pipes the
guard gives them, never this channel: they cannot forge a report or a verdict.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal as signals
from typing import Any, ClassVar

from bastion.config import SshResource
from bastion.config.resources import AnyResource as Resource
from bastion.targets.base import Hooks, LineFilter, OpenRequest, Proxied, TargetError, TargetExit
from bastion.targets.ssh import SshEndpoint
from guard.agent import MAX_FRAME, FrameError, FrameReader, encode, encode_json
from policies.engine import Action, Decision
from policies.execs import Exec, ExecError, visible

log = logging.getLogger(__name__)
HELLO_TIMEOUT = 20.0
WIND_DOWN = 5.0  # seconds the programs held for reviewers get to be withdrawn when the session ends
MAX_EARLY = 4096  # what a target says before the guard's hello (a shell's "not found"), kept for the message


class GuardEndpoint(SshEndpoint):
    """The relay's endpoint for a guarded session: frames to and from bastion-guard on the target."""

    proxied: ClassVar[Proxied | None] = "exec"

    def __init__(self, relay: Any) -> None:
        super().__init__(relay)
        self.hooks: Hooks | None = None
        self.reader = FrameReader()
        self.hello = asyncio.Event()
        self.early = bytearray()
        self.quit: dict[str, Any] | None = None
        self.broken: str | None = None  # a protocol error: why the session was closed
        self.held: set[int] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    def line_filter(res: Resource, command: str | None, pty: bool) -> LineFilter | None:
        """None: the guard judges the programs themselves, so a typed line is not judged (and held) twice."""
        return None

    def _remote(self, req: OpenRequest, res: SshResource) -> tuple[str | None, bool]:
        return f"{res.guard_path} --session {req.session_id}", False

    async def open(self, req: OpenRequest) -> None:
        if req.hooks is None:
            raise TargetError("a guarded session needs its policy hooks")
        self.hooks = req.hooks
        await super().open(req)
        self._send(encode_json("S", {
            "v": 1, "session": req.session_id, "command": req.command,
            "term": req.term_type if req.pty else None, "cols": req.cols, "rows": req.rows,
            "env": {"TERM": req.term_type} if req.pty else {}}))
        hello, closed = asyncio.ensure_future(self.hello.wait()), asyncio.ensure_future(self.closed.wait())
        await asyncio.wait((hello, closed), timeout=HELLO_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        hello.cancel()
        closed.cancel()
        if not self.hello.is_set():
            said = bytes(self.early).decode("utf-8", "replace").strip().splitlines()
            why = said[-1][:200] if said else (self.broken or "no answer")
            log.error("bastion-guard did not start on %s: %s", req.name, why)
            self.close()
            raise TargetError(f"bastion-guard did not start on the target ({why}); the session was not opened "
                              "(enforce: guard runs nothing unsupervised)")

    # -- frames from the guard --------------------------------------------------------------------------
    def received(self, data: bytes, stderr: bool) -> None:
        if stderr:  # the guard's own diagnostics, or the shell's complaint that there is no guard
            if not self.hello.is_set():
                self.early += data[:MAX_EARLY - len(self.early)]
            else:
                log.warning("bastion-guard: %s", data[:500].decode("utf-8", "backslashreplace").rstrip())
            return
        if self.broken is not None:
            return
        try:
            frames = self.reader.feed(data)
        except FrameError as e:
            if not self.hello.is_set():
                self.early += data[:MAX_EARLY - len(self.early)]
            self._break(f"not a bastion-guard frame ({e})")
            return
        for kind, payload in frames:
            self._frame(kind, payload)

    def _frame(self, kind: str, payload: bytes) -> None:
        if kind == "O":
            self.relay.output(self, payload)
        elif kind == "R":
            self.relay.output(self, payload, stderr=True)
        elif kind == "X":
            task = asyncio.get_running_loop().create_task(self._judge(_json(payload)))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif kind == "H":
            if _json(payload).get("v") != 1:
                self._break("bastion-guard speaks another protocol version")
            else:
                self.hello.set()
        elif kind == "N":
            text = visible(str(_json(payload).get("text", ""))[:500])  # it may quote a path or an argv
            log.info("bastion-guard: %s", text)
            if self.hooks is not None:
                self.hooks.event(f"guard: {text}")
        elif kind == "Q":
            self.quit = _json(payload)
        else:
            self._break(f"unknown frame type {kind!r}")

    def _break(self, why: str) -> None:
        """Fail closed: a guard that says something unreadable ends the session (and, with it, everything it ran)."""
        if self.broken is None:
            self.broken = why
            log.warning("guarded session closed: %s", why)
            self.lost_reason = why
            self.close()

    async def _judge(self, raw: dict[str, Any]) -> None:
        """Judge one exec and send the verdict; anything that goes wrong on the way is a refusal."""
        assert self.hooks is not None
        rid, cached = raw.get("id"), raw.get("cached") is True
        allow = cache = False
        try:
            ev = Exec.from_report(raw)
            d = self.hooks.judge(ev)
            self.hooks.note(d)
            if cached:
                if d.action > Action.WARN:  # the guard's cache holds plain allows only: a guard that lies
                    self._break(f"bastion-guard ran an exec it was not allowed to run: {ev.describe()}")
                return
            if d.action <= Action.WARN:
                allow, cache = True, d.action == Action.ALLOW
                if d.action == Action.WARN:
                    self._say(f"warning ({_by(d)}): {d.reason} (exec: {d.text})")
            elif d.action == Action.BLOCK:
                self._say(f"blocked by {_by(d)}: {d.reason} (exec: {d.text})")
            else:
                allow = await self._hold(rid, d)
        except ExecError as e:
            self._break(f"an exec report that cannot be read ({e})")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("guarded session: judging an exec failed; refused")
            self._say("refused: the exec could not be judged (see the daemon log)")
        if not cached:
            self._send(encode_json("V", {"id": rid, "allow": allow, "cache": cache}))

    async def _hold(self, rid: Any, d: Decision) -> bool:
        assert self.hooks is not None
        if isinstance(rid, int):
            self.held.add(rid)
        try:
            final = await self.hooks.hold(d)
        finally:
            self.held.discard(rid if isinstance(rid, int) else -1)
        if final.get("status") == "approved":
            return True
        self._say(f"{final.get('status', 'refused')}: {final.get('status_reason') or ''} (exec: {d.text})")
        return False

    def _say(self, text: str) -> None:
        if self.pty:
            self.relay.say(f"\r\n\x1b[1;31mbastion: {text}\x1b[0m\r\n".encode())
        else:
            self.relay.output(self, f"bastion: {text}\n".encode(), stderr=True)

    # -- to the guard -----------------------------------------------------------------------------------
    def _send(self, frame: bytes) -> None:
        self._on_chan(lambda c: c.write(frame))

    def write(self, data: bytes) -> None:
        if self.pty and self.held and b"\x03" in data and self.hooks is not None:
            self.hooks.withdraw()  # Ctrl-C while a program waits for a reviewer withdraws the request
        for i in range(0, len(data), MAX_FRAME):
            self._send(encode("I", data[i:i + MAX_FRAME]))

    def resize(self, cols: int, rows: int) -> None:
        self._send(encode_json("W", {"cols": cols, "rows": rows}))

    def signal(self, name: str) -> None:
        self._send(encode_json("K", {"signal": name}))

    def send_break(self, msec: int) -> None:
        self.signal("INT")

    def eof(self) -> None:
        self._send(encode("E"))

    async def wait(self) -> TargetExit:
        end = await super().wait()
        pending = [t for t in self.tasks if not t.done()]
        if pending and self.hooks is not None:
            # what waits for a reviewer ends with the session: withdrawn (as a held command line is when its
            # operator hangs up), its waits ended in order; a cancelled wait left the request to be cancelled by the
            # session's end instead, and a task of it behind that kept this connection's process for a minute
            self.hooks.withdraw()
            await asyncio.wait(pending, timeout=WIND_DOWN)
        for task in list(self.tasks):
            task.cancel()
        if self.broken is not None:
            return TargetExit(None, None, f"closed by the bastion: {self.broken}")
        if self.quit is None:
            return TargetExit(end.status, end.signal, "bastion-guard ended before the session did; everything the "
                              f"session ran was stopped with it ({end.message})")
        status, sig = self.quit.get("status"), self.quit.get("signal")
        if isinstance(sig, int) and sig > 0:
            name = _signal_name(sig)
            return TargetExit(None, name, f"killed by signal {name}")
        if isinstance(status, int):
            return TargetExit(status, None, f"exited with status {status}")
        return end


def _by(d: Decision) -> str:
    return f"rule {d.rule!r}" if d.rule else "the default of the policy"


def _json(payload: bytes) -> dict[str, Any]:
    try:
        out = json.loads(payload)
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


def _signal_name(num: int) -> str:
    try:
        return signals.Signals(num).name.removeprefix("SIG")
    except ValueError:
        return str(num)
