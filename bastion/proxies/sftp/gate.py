"""The SFTP gate: between the operator's sftp client and the target's sftp-server, every request that changes or
reads a file is judged at the protocol before the target sees it.

Why at the protocol: an sftp client's "rm" is a REMOVE request, its "put" an OPEN for writing, its "chmod" a
SETSTAT. No command line exists to filter; the requests are the truth. Each judged request becomes a
:class:`policies.transfer.Transfer` (upload, download, remove, rename, chmod, mkdir, rmdir, symlink) with its
path resolved *on the target* (REALPATH, asked by the gate itself, so a symlink ``~/x -> /etc`` is judged as
``/etc``), and the policy allows it, refuses it (a permission error for the client, the rule on its stderr), or
holds it for reviewers while the client waits. Requests are handled in order: one being resolved or held holds
those behind it, as a single sftp-server would.

Fail closed: a request the gate cannot parse ends the session; an extension it does not know is refused (and
hidden from the client's view of the server's extensions); a path it cannot resolve is judged as written.
What it cannot see: a path component swapped by another session between the gate's REALPATH and the target's
own use of the path (the target is reached by the bastion's credential; the operator's other sessions are judged
too, but not atomically with this one).
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from bastion.proxies.sftp import packets as P
from bastion.proxies.sftp.files import OpenFile, Tracked, Unresolvable, record_of, resolve, transfer_of
from policies.engine import Action, Decision
from policies.transfer import Transfer
from recorder.archive import Spool

log = logging.getLogger(__name__)

# never judged: reading metadata and directory listings (what ``ls`` shows), and handle housekeeping
PASS = frozenset({P.FXP_INIT, P.FXP_OPENDIR, P.FXP_READDIR, P.FXP_STAT, P.FXP_LSTAT, P.FXP_FSTAT, P.FXP_REALPATH,
                  P.FXP_READLINK})
PASS_EXT = frozenset({"statvfs@openssh.com", "fstatvfs@openssh.com", "fsync@openssh.com", "limits@openssh.com",
                      "expand-path@openssh.com", "home-directory", "users-groups-by-id@openssh.com"})
JUDGED_EXT = frozenset({"posix-rename@openssh.com", "hardlink@openssh.com", "lsetstat@openssh.com"})
OWN_IDS = 0xFFFF0000  # the gate's own requests to the target (REALPATH) use ids from here up
RECHECK = 128 * 1024  # an open file's growing size is judged again every 128 KiB (rules with max_bytes)


class Hooks(Protocol):
    """What the gate needs of its session (:class:`bastion.targets.base.Hooks` is one)."""

    @property
    def judge(self) -> Callable[[Any], Decision]: ...

    @property
    def hold(self) -> Callable[[Decision], Awaitable[dict[str, Any]]]: ...

    @property
    def note(self) -> Callable[[Decision], None]: ...

    @property
    def event(self) -> Callable[[str], None]: ...


class SessionEnded(Exception):
    """The gate cannot go on (a malformed packet, the target gone): the session ends."""


class SftpGate:
    """One sftp session's gate. ``to_target``/``to_client`` write bytes; ``say`` writes a line to the operator's
    stderr; ``record`` appends an operation to the session's transfer log; ``end`` closes the session."""

    def __init__(self, hooks: Hooks, *, to_target: Callable[[bytes], None], to_client: Callable[[bytes], None],
                 say: Callable[[str], None], record: Callable[[dict[str, Any]], None], end: Callable[[str], None],
                 spool: Callable[[], Spool] | None = None):
        self.hooks, self.to_target, self.to_client = hooks, to_target, to_client
        self.spool = spool  # archiving on: where each file's bytes go
        self.say, self.record, self.end = say, record, end
        self._from_client, self._from_target = P.Framer(), P.Framer()
        self._queue: deque[bytes] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._own: dict[int, asyncio.Future[P.Reply]] = {}
        self._next_own = OWN_IDS
        self._tracked: dict[int, Tracked] = {}  # client request id -> what its reply completes
        self._files: dict[bytes, OpenFile] = {}  # handle -> the open file's transfer
        self.made: set[str] = set()  # uploaded files and made directories (Where.made)
        self._closed = False

    @property
    def files(self) -> dict[bytes, OpenFile]:
        return self._files

    # -- bytes in -------------------------------------------------------------------------------------
    def from_client(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            packets = self._from_client.feed(data)
        except P.PacketError as e:
            return self._fail(f"the client sent a malformed SFTP packet ({e})")
        for pkt in packets:
            if self._worker is None and not self._queue and self._fast(pkt):
                continue
            self._queue.append(pkt)
        if self._queue and self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._drain())

    def from_target(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            packets = self._from_target.feed(data)
            for pkt in packets:
                self._reply(pkt, P.parse_reply(pkt))
        except P.PacketError as e:
            self._fail(f"the target sent a malformed SFTP packet ({e})")

    # -- client requests ------------------------------------------------------------------------------
    def _fast(self, pkt: bytes) -> bool:
        """Handle a request that needs no waiting (no path to resolve, no hold) at once; False if it needs the
        worker. Bulk data (READ, WRITE) takes this path."""
        try:
            req = P.parse_request(pkt)
        except P.PacketError as e:
            self._fail(f"the client sent a malformed SFTP request ({e})")
            return True
        if req.id is not None and req.id >= OWN_IDS:
            self._fail("the client used a request id reserved by the bastion")
            return True
        if req.type in (P.FXP_WRITE, P.FXP_READ, P.FXP_CLOSE):
            return self._on_handle(req, pkt)
        if req.type in PASS or (req.type == P.FXP_EXTENDED and req.extension in PASS_EXT):
            if req.type == P.FXP_INIT:
                self._tracked[-1] = Tracked("init")
            self.to_target(pkt)
            return True
        return False

    def _on_handle(self, req: P.Request, pkt: bytes) -> bool:
        """READ, WRITE and CLOSE of an open file: its bytes are counted and hashed; a size over a rule's
        ``max_bytes`` is judged again (and may wait: then the worker takes it)."""
        f = self._files.get(req.handle or b"")
        if f is None:  # a directory handle, or one the server will refuse: nothing to account
            self.to_target(pkt)
            return True
        assert req.id is not None
        if f.pending is not None:  # a write that waits for reviewers holds those behind it
            return False
        if f.refused is not None:
            self._deny(req.id, f.refused)
            return True
        if req.type == P.FXP_WRITE and req.data is not None and req.offset is not None:
            end = (f.size if f.append else req.offset) + len(req.data)
            if end > f.checked + RECHECK and not self._recheck(f, end):
                return False  # waits for a reviewer, in order: the worker holds it
            if f.refused is not None:
                self._deny(req.id, f.refused)
                return True
            f.wrote(req.offset, req.data)
        elif req.type == P.FXP_READ and req.offset is not None:
            end = req.offset + (req.length or 0)  # a file that grew since it was opened is judged as it goes
            if f.transfer.op == "download" and end > max(f.checked, f.transfer.size or 0) + RECHECK and \
                    not self._recheck(f, end):
                return False
            if f.refused is not None:
                self._deny(req.id, f.refused)
                return True
            self._tracked[req.id] = Tracked("read", handle=req.handle, offset=req.offset)
        elif req.type == P.FXP_CLOSE:
            self._tracked[req.id] = Tracked("close", handle=req.handle)
        self.to_target(pkt)
        return True

    def _recheck(self, f: OpenFile, size: int) -> bool:
        """Judge an open file again at its new size: True to go on at once, False when it must wait (held)."""
        f.checked = size - size % RECHECK
        d = self.hooks.judge(Transfer(f.transfer.op, f.transfer.path, size=size))
        if d.action == Action.BLOCK:
            self._refuse_file(f, d)
            return True
        if d.action == Action.REQUIRE_APPROVAL and d.rule != f.decision.rule:
            f.pending = d
            return False
        return True

    def _refuse_file(self, f: OpenFile, d: Decision) -> None:
        self.hooks.note(d)
        f.refused = d
        self.say(f"{d.text}: {d.refusal()}")

    async def _drain(self) -> None:
        """The worker: requests that wait (a path resolved on the target, a reviewer), strictly in order."""
        try:
            while self._queue and not self._closed:
                pkt = self._queue.popleft()
                req = P.parse_request(pkt)  # parsed once already: it cannot fail now
                f = self._files.get(req.handle or b"") if req.type in (P.FXP_WRITE, P.FXP_READ) else None
                if (f is not None and f.pending is not None) or not self._fast(pkt):
                    await self._judged(req, pkt)
        except SessionEnded as e:
            self._fail(str(e))
        except Exception:
            log.exception("sftp gate failed")
            self._fail("internal error in the SFTP gate")
        finally:
            self._worker = None
            if self._queue and not self._closed:
                self._worker = asyncio.get_running_loop().create_task(self._drain())

    async def _judged(self, req: P.Request, pkt: bytes) -> None:
        """A request that changes or reads a file: resolve, judge, hold or refuse, forward."""
        assert req.id is not None
        if req.type in (P.FXP_WRITE, P.FXP_READ):  # an open file grown past a held size
            f = self._files[req.handle or b""]
            if f.pending is not None and not await self._allowed(f.pending):
                self._refuse_file(f, f.pending)
            f.pending = None
            self._on_handle(req, pkt)
            return
        if req.type == P.FXP_EXTENDED and req.extension not in JUDGED_EXT:
            self.say(f"the SFTP extension {req.extension!r} is not allowed through the bastion (it cannot be judged)")
            self.to_client(P.status(req.id, P.FX_OP_UNSUPPORTED, "not allowed by the bastion"))
            return
        try:
            transfers = await transfer_of(req, self)
        except Unresolvable as e:
            d = Decision(Action.BLOCK, None, f"refused: the path {e} cannot be resolved on the target", str(e))
            self.hooks.note(d)
            self._deny(req.id, d)
            return
        if transfers is None:
            self.to_client(P.status(req.id, P.FX_OP_UNSUPPORTED, "not allowed by the bastion"))
            return
        if not transfers:  # nothing to judge (the mode of a file this session just sent)
            self.to_target(pkt)
            return
        decisions = [self.hooks.judge(t) for t in transfers]
        d = max(decisions, key=lambda x: x.action)
        self.hooks.note(d)
        if d.action == Action.BLOCK or not await self._allowed(d):
            self._deny(req.id, d)
            self.record({**record_of(transfers[0]), "decision": "blocked" if d.action == Action.BLOCK else "refused",
                         "rule": d.rule})
            return
        if d.action == Action.WARN:
            self.say(f"{d.text}: {d.warning()}")
        self._tracked[req.id] = Tracked("op", transfer=transfers[0], decision=d,
                                        append=req.type == P.FXP_OPEN and bool((req.pflags or 0) & P.FXF_APPEND))
        self.to_target(pkt)

    async def _allowed(self, d: Decision) -> bool:
        """Allow and warn go on; a hold waits for reviewers (the client waits too)."""
        if d.action != Action.REQUIRE_APPROVAL:
            return d.action != Action.BLOCK
        final = await self.hooks.hold(d)
        return final.get("status") == "approved"

    def _deny(self, req_id: int, d: Decision) -> None:
        if d.action == Action.BLOCK:
            why = d.refusal()
        else:  # a hold that was denied, withdrawn or expired
            why = f"not approved (held by rule {d.rule!r}): {d.reason}" if d.rule else f"not approved: {d.reason}"
        self.to_client(P.status(req_id, P.FX_PERMISSION_DENIED, f"bastion: {why}"))
        self.say(f"{d.text}: {why}")

    # -- paths ----------------------------------------------------------------------------------------
    async def resolve(self, path: str, follow: bool) -> str:
        """``path`` as the target sees it, absolute (:func:`resolve`). One the target cannot resolve (a loop of
        symlinks deeper than its REALPATH follows, a parent that does not exist) is not judged as written: the
        request is refused (:class:`Unresolvable`)."""
        real = await resolve(self._realpath, path, follow)
        if real is None:
            raise Unresolvable(path)
        return "/" + real.lstrip("/")

    async def size(self, real: str) -> int | None:
        """The size of the file at ``real`` (STAT), if the target says."""
        reply = await self._ask(lambda rid: P.stat(rid, real))
        return reply.attrs.size if reply.type == P.FXP_ATTRS and reply.attrs is not None else None

    async def exists(self, real: str) -> bool:
        """Whether anything is at ``real`` (LSTAT: a symlink itself counts)."""
        reply = await self._ask(lambda rid: P.lstat(rid, real))
        return reply.type == P.FXP_ATTRS

    async def _realpath(self, path: str) -> str | None:
        reply = await self._ask(lambda rid: P.realpath(rid, path))
        if reply.type == P.FXP_NAME and reply.names:
            return posixpath.normpath(reply.names[0][0])
        return None

    async def _ask(self, packet: Callable[[int], bytes]) -> P.Reply:
        """A request of the gate's own to the target (REALPATH, LSTAT), with an id the client may not use."""
        rid = self._next_own
        self._next_own = OWN_IDS + (self._next_own - OWN_IDS + 1) % 0xFFFF
        fut: asyncio.Future[P.Reply] = asyncio.get_running_loop().create_future()
        self._own[rid] = fut
        self.to_target(packet(rid))
        try:
            return await asyncio.wait_for(fut, 30)
        except TimeoutError:
            raise SessionEnded("the target did not answer a path lookup within 30 s") from None
        finally:
            self._own.pop(rid, None)

    # -- server replies -------------------------------------------------------------------------------
    def _reply(self, pkt: bytes, reply: P.Reply) -> None:
        if reply.id is not None and reply.id in self._own:
            self._own[reply.id].set_result(reply)
            return
        if reply.type == P.FXP_VERSION:
            self._tracked.pop(-1, None)
            pkt = P.with_extensions(pkt, lambda name: name in PASS_EXT or name in JUDGED_EXT)
        elif reply.id is not None:
            t = self._tracked.pop(reply.id, None)
            if t is not None:
                self._completes(t, reply)
        self.to_client(pkt)

    def _completes(self, t: Tracked, reply: P.Reply) -> None:
        """What a reply completes: an open file's handle, a read's data, a closed file's record, an op's result."""
        ok = reply.type != P.FXP_STATUS or reply.code == P.FX_OK
        if t.kind == "op" and t.transfer is not None and t.decision is not None:
            if ok and t.transfer.op in ("upload", "mkdir"):
                self.made.add(t.transfer.path)
            if reply.type == P.FXP_HANDLE and reply.handle is not None and t.transfer.op in ("upload", "download"):
                self._files[reply.handle] = OpenFile(t.transfer, t.decision, append=t.append,
                                                     spool=self.spool() if self.spool is not None else None)
                return
            self.record({**record_of(t.transfer), "decision": t.decision.action.label, "rule": t.decision.rule,
                         "result": "ok" if ok else (reply.message or f"status {reply.code}")})
        elif t.kind == "read" and reply.type == P.FXP_DATA and reply.data is not None:
            f = self._files.get(t.handle or b"")
            if f is not None and t.offset is not None:
                f.read(t.offset, reply.data)
        elif t.kind == "close":
            f = self._files.pop(t.handle or b"", None)
            if f is not None:
                self.record({**f.summary(ok), "result": "ok" if ok else (reply.message or f"status {reply.code}")})

    # -- the end --------------------------------------------------------------------------------------
    def _fail(self, why: str) -> None:
        if self._closed:
            return
        self._closed = True
        self.hooks.event(f"sftp: {why}; the session ends")
        self.say(f"{why}; the session ends")
        for fut in self._own.values():
            if not fut.done():
                fut.cancel()
        self.end(why)

    def close(self) -> None:
        """The session ended: files still open are recorded as they got."""
        for f in self._files.values():
            self.record({**f.summary(False), "result": "not closed"})
        self._files.clear()
        self._closed = True
