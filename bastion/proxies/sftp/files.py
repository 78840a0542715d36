"""What the SFTP gate knows of requests and open files: the transfers a request does (its paths resolved on the
target), and each open file's size and SHA-256 as its bytes go by."""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bastion.proxies.sftp import packets as P
from policies.engine import Decision
from policies.transfer import HARD_LINK, Transfer
from recorder.archive import Spool

Resolve = Callable[[str, bool], Awaitable[str]]  # (path, follow the last symlink) -> the target's absolute path
RealPath = Callable[[str], Awaitable[str | None]]  # the target's realpath of a path, None if it has none


@dataclass
class Tracked:
    """A request whose reply the gate waits for."""

    kind: str  # init | op | read | close
    transfer: Transfer | None = None
    decision: Decision | None = None
    handle: bytes | None = None
    offset: int | None = None
    append: bool = False  # an OPEN with APPEND: the server writes at the end, whatever the offsets say


@dataclass
class OpenFile:
    """A file opened for upload or download: its bytes are counted and hashed in order. Writes or reads out of
    order (a client that does not go front to back) leave the size right and the hash unknown."""

    transfer: Transfer
    decision: Decision
    size: int = 0
    checked: int = 0  # the size at which it was last judged (rules with max_bytes)
    refused: Decision | None = None  # over a limit: every further request on it is refused
    pending: Decision | None = None  # over a limit that needs a reviewer: the next write waits for one
    spool: Spool | None = None  # its bytes, on their way to the archive (archiving on)
    append: bool = False  # opened with APPEND: each write adds its length, at the end (offsets are ignored)
    _sha: Any = field(default_factory=hashlib.sha256)
    _next: int = 0
    _in_order: bool = True

    def _add(self, offset: int, data: bytes) -> None:
        if self.append:
            offset = self._next if self._in_order else self.size
        if self.spool is not None:
            self.spool.write(offset, data)
        if offset == self._next:
            self._sha.update(data)
            self._next += len(data)
        elif data:
            self._in_order = False
        self.size = max(self.size, offset + len(data))

    def wrote(self, offset: int, data: bytes) -> None:
        self._add(offset, data)

    def read(self, offset: int, data: bytes) -> None:
        self._add(offset, data)

    def summary(self, complete: bool = True) -> dict[str, Any]:
        """Its line in the transfer log; ``complete``: the transfer ended well (the archive keeps it)."""
        sha = self._sha.hexdigest() if self._in_order and self._next == self.size else None
        out = {**record_of(self.transfer), "size": self.size, "sha256": sha,
               "decision": self.decision.action.label, "rule": self.decision.rule}
        if self.spool is not None:
            kept = self.spool.keep(sha) if complete else None
            if not complete:
                self.spool.abandon("the transfer did not complete")
            out["archived"] = kept is not None
            if kept is not None:
                out["sha256"] = kept
            elif self.spool.refused:
                out["archive_note"] = self.spool.refused
        return out


def record_of(t: Transfer) -> dict[str, Any]:
    """A transfer as a line of the transfer log."""
    out: dict[str, Any] = {"op": t.op, "path": t.path}
    if t.other:
        out["other"] = t.other
    if t.size is not None:
        out["size"] = t.size
    if t.detail:
        out["detail"] = t.detail
    return out


def attrs_detail(a: P.Attrs | None) -> str:
    """What a SETSTAT changes, in words the policy's shell equivalent understands."""
    if a is None:
        return ""
    parts = []
    if a.permissions is not None:
        parts.append(f"mode {a.permissions & 0o7777:04o}")
    if a.uid is not None:
        parts.append(f"owner {a.uid}:{a.gid}")
    if a.size is not None:
        parts.append(f"size {a.size}")
    if a.atime is not None:
        parts.append("times")
    return ", ".join(parts)


class Unresolvable(Exception):
    """A path the target cannot resolve: judged as nothing, refused (fail closed)."""


class Where(Protocol):
    """What :func:`transfer_of` asks of the session: paths as the target sees them, and what it did so far."""

    @property
    def files(self) -> Mapping[bytes, OpenFile]: ...  # the open files, by handle

    made: set[str]  # files uploaded and directories made by this session (their modes are the upload's own)

    async def resolve(self, path: str, follow: bool) -> str: ...  # absolute, or Unresolvable

    async def exists(self, real: str) -> bool: ...  # anything at this path (not following a last symlink)

    async def size(self, real: str) -> int | None: ...  # the size of the file there, if known


UNUSUAL_MODE = 0o7002  # setuid, setgid, sticky, world-writable: a mode that is a decision of its own
SPECIAL_BITS = 0o7000  # what the server's umask does not take away from a new file's mode (setuid, setgid, sticky)


def _mode_change(real: str, a: P.Attrs | None) -> list[Transfer]:
    """The mode given with a new file or directory (OPEN, MKDIR; the server applies its umask), as a chmod when
    it carries setuid, setgid or sticky bits."""
    if a is None or a.permissions is None or not a.permissions & SPECIAL_BITS:
        return []
    return [Transfer("chmod", real, detail=f"mode {a.permissions & 0o7777:04o}")]


async def _setstat(req: P.Request, where: Where) -> list[Transfer] | None:
    t, ext, a = req.type, req.extension, req.attrs
    if t == P.FXP_FSETSTAT:
        f = where.files.get(req.handle or b"")
        if f is None:
            return None
        real = f.transfer.path
    else:
        real = await where.resolve(req.path or "", ext != "lsetstat@openssh.com")
    own = real in where.made and a is not None and a.uid is None and a.size is None and \
        not (a.permissions or 0) & UNUSUAL_MODE
    if own:  # scp -p, sftp put -p, scp -r: the mode and times of what this session just sent are part of it
        return []
    out = [Transfer("chmod", real, detail=attrs_detail(a))]
    if a is not None and a.size is not None:  # truncating a file changes its contents
        out.append(Transfer("upload", real, size=a.size))
    return out


async def transfer_of(req: P.Request, where: Where) -> list[Transfer] | None:
    """The transfers ``req`` does, each judged (the strictest decides; none: nothing to judge); None for a request
    the gate refuses outright (an unknown handle's attributes). Unresolvable: a path the target cannot resolve."""
    t, ext = req.type, req.extension
    path, resolve = req.path or "", where.resolve
    if t == P.FXP_OPEN:
        real = await resolve(path, True)
        flags = req.pflags or 0
        writes = flags & (P.FXF_WRITE | P.FXF_APPEND | P.FXF_CREAT | P.FXF_TRUNC)
        ops = (["upload"] if writes else []) + (["download"] if flags & P.FXF_READ or not writes else [])
        size = await where.size(real) if "download" in ops else None  # max_bytes rules judge it at once
        return [Transfer(op, real, size=size if op == "download" else None) for op in ops] + \
            _mode_change(real, req.attrs)
    if t == P.FXP_REMOVE:
        return [Transfer("remove", await resolve(path, False))]
    if t == P.FXP_RENAME or ext == "posix-rename@openssh.com":
        src, dst = await resolve(path, False), await resolve(req.path2 or "", False)
        replaced = [Transfer("remove", dst)] if await where.exists(dst) else []  # what it lands on is gone
        return [Transfer("rename", src, dst), *replaced]
    if t == P.FXP_MKDIR:
        real = await resolve(path, False)
        return [Transfer("mkdir", real), *_mode_change(real, req.attrs)]
    if t == P.FXP_RMDIR:
        return [Transfer("rmdir", await resolve(path, False))]
    if t == P.FXP_SYMLINK:
        link = await resolve(path, False)
        points = posixpath.normpath(posixpath.join(posixpath.dirname(link), req.path2 or ""))
        return [Transfer("symlink", link, "/" + points.lstrip("/"))]  # POSIX keeps "//", the kernel does not
    if ext == "hardlink@openssh.com":  # path: the existing file, path2: the new name
        return [Transfer("symlink", await resolve(req.path2 or "", False), await resolve(path, True),
                         detail=HARD_LINK)]
    if t in (P.FXP_SETSTAT, P.FXP_FSETSTAT) or ext == "lsetstat@openssh.com":
        return await _setstat(req, where)
    return None


async def resolve(realpath: RealPath, path: str, follow: bool = True) -> str | None:
    """``path`` absolute on the target: symlinks resolved there (with ``follow`` the last component too); a path
    that does not exist yet is its parent's real path plus its name. None when even the parent cannot be
    resolved."""
    if follow:
        real = await realpath(path)
        if real is not None:
            return posixpath.normpath(real)
    parent, name = posixpath.split(path.rstrip("/") or "/")
    if name in ("", ".", ".."):
        real = await realpath(path)
        return posixpath.normpath(real) if real is not None else None
    real_parent = await realpath(parent or ".")
    return posixpath.join(posixpath.normpath(real_parent), name) if real_parent is not None else None
