"""A pure SFTP version 3 codec (draft-ietf-secsh-filexfer-02 and the extensions of OpenSSH's PROTOCOL file): a framer,
strict parsers of requests and replies, encoders. No I/O; malformed input raises PacketError, nothing else.
Checked against OpenSSH 9.2 (sftp-server.c, sftp-client.c, PROTOCOL and the tests running the real ones):
- SSH_FXP_SYMLINK carries (targetpath, linkpath), the reverse of the draft; sftp-server calls symlink(first, second).
  Request.path is the link being created, Request.path2 what it points to, whatever the wire order.
- Both ends drop the connection on a length field over SFTP_MAX_MSG_LENGTH (256 KiB); the client writes and reads at
  most 255 KiB of data per packet, so MAX_PACKET (a bound on the length field) leaves 1 KiB of slack above that.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

FXP_INIT, FXP_VERSION, FXP_OPEN, FXP_CLOSE, FXP_READ, FXP_WRITE, FXP_LSTAT, FXP_FSTAT = 1, 2, 3, 4, 5, 6, 7, 8
FXP_SETSTAT, FXP_FSETSTAT, FXP_OPENDIR, FXP_READDIR, FXP_REMOVE, FXP_MKDIR, FXP_RMDIR = 9, 10, 11, 12, 13, 14, 15
FXP_REALPATH, FXP_STAT, FXP_RENAME, FXP_READLINK, FXP_SYMLINK = 16, 17, 18, 19, 20
FXP_STATUS, FXP_HANDLE, FXP_DATA, FXP_NAME, FXP_ATTRS = 101, 102, 103, 104, 105
FXP_EXTENDED, FXP_EXTENDED_REPLY = 200, 201
FX_OK, FX_EOF, FX_NO_SUCH_FILE, FX_PERMISSION_DENIED, FX_FAILURE, FX_BAD_MESSAGE = 0, 1, 2, 3, 4, 5
FX_NO_CONNECTION, FX_CONNECTION_LOST, FX_OP_UNSUPPORTED = 6, 7, 8
FXF_READ, FXF_WRITE, FXF_APPEND, FXF_CREAT, FXF_TRUNC, FXF_EXCL = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
ATTR_SIZE, ATTR_UIDGID, ATTR_PERMISSIONS, ATTR_ACMODTIME, ATTR_EXTENDED = 0x1, 0x2, 0x4, 0x8, 0x80000000

SFTP_MAX_MSG_LENGTH = 256 * 1024  # OpenSSH sftp-common.h: both ends refuse a longer length field
MAX_PACKET = SFTP_MAX_MSG_LENGTH + 1024  # the largest length field (prefix not counted) accepted here

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_HEAD = struct.Struct(">IB")


class PacketError(ValueError):
    """A malformed, truncated, oversized or unknown SFTP packet (or a Request/Reply that cannot be encoded)."""


class Framer:
    """Accumulates a byte stream and yields whole packets, each including its 4-byte length prefix, so a packet can be
    forwarded verbatim. Linear in the bytes fed: packets are sliced out at an offset and the consumed front deleted
    once per feed (less than a packet remains, and CPython drops a bytearray's front without moving the rest)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        off, end = 0, len(buf)
        while end - off >= 4:
            (length,) = _U32.unpack_from(buf, off)
            if length == 0 or length > MAX_PACKET:
                raise PacketError(f"packet length {length} out of range 1..{MAX_PACKET}")
            if end - off < 4 + length:
                break
            out.append(bytes(buf[off:off + 4 + length]))
            off += 4 + length
        del buf[:off]
        return out

    def pending(self) -> int:
        return len(self._buf)


@dataclass(frozen=True)
class Attrs:
    flags: int = 0
    size: int | None = None
    uid: int | None = None
    gid: int | None = None
    permissions: int | None = None
    atime: int | None = None
    mtime: int | None = None
    extended: tuple[tuple[bytes, bytes], ...] = ()

    @classmethod
    def of(cls, size: int | None = None, uid: int | None = None, gid: int | None = None, permissions: int | None = None,
           atime: int | None = None, mtime: int | None = None, extended: tuple[tuple[bytes, bytes], ...] = ()) -> Attrs:
        """Attrs with the flags computed from the fields given (uid/gid and atime/mtime go in pairs)."""
        flags = sum(bit for bit, v in ((ATTR_SIZE, size), (ATTR_UIDGID, uid), (ATTR_PERMISSIONS, permissions),
                                       (ATTR_ACMODTIME, atime), (ATTR_EXTENDED, extended or None)) if v is not None)
        return cls(flags, size, uid, gid, permissions, atime, mtime, extended)


@dataclass(frozen=True)
class Request:
    """A client packet. Extensions: see _EXT_FIELDS, _EXT_ARGS; an unknown one's undecoded bytes are ext_args[0]."""

    type: int
    id: int | None
    version: int | None = None
    path: str | None = None
    path2: str | None = None
    handle: bytes | None = None
    pflags: int | None = None
    attrs: Attrs | None = None
    offset: int | None = None
    length: int | None = None
    data: bytes | None = None
    extension: str | None = None
    flags: int | None = None
    ext_args: tuple[object, ...] = ()


@dataclass(frozen=True)
class Reply:
    type: int
    id: int | None
    version: int | None = None
    extensions: tuple[tuple[str, bytes], ...] = ()
    code: int | None = None
    message: str = ""
    handle: bytes | None = None
    data: bytes | None = None
    names: tuple[tuple[str, str, Attrs], ...] = ()
    attrs: Attrs | None = None


# Field layouts: Request attributes, read and written as _KIND says (s: utf-8 string with surrogateescape, b: byte
# string, u: uint32, q: uint64, a: ATTRS, i: a string of packed uint32 ids read as a tuple of ints). SYMLINK lists
# path2 first: OpenSSH's (target, link) order.
_KIND = {"path": "s", "path2": "s", "handle": "b", "data": "b", "pflags": "u", "length": "u", "offset": "q",
         "attrs": "a"}
_REQ_FIELDS: dict[int, tuple[str, ...]] = {
    FXP_OPEN: ("path", "pflags", "attrs"), FXP_CLOSE: ("handle",), FXP_READ: ("handle", "offset", "length"),
    FXP_WRITE: ("handle", "offset", "data"), FXP_LSTAT: ("path",), FXP_FSTAT: ("handle",),
    FXP_SETSTAT: ("path", "attrs"), FXP_FSETSTAT: ("handle", "attrs"), FXP_OPENDIR: ("path",),
    FXP_READDIR: ("handle",), FXP_REMOVE: ("path",), FXP_MKDIR: ("path", "attrs"), FXP_RMDIR: ("path",),
    FXP_REALPATH: ("path",), FXP_STAT: ("path",), FXP_RENAME: ("path", "path2"), FXP_READLINK: ("path",),
    FXP_SYMLINK: ("path2", "path"),
}
_EXT_FIELDS: dict[str, tuple[str, ...]] = {
    "posix-rename@openssh.com": ("path", "path2"), "hardlink@openssh.com": ("path", "path2"),
    "statvfs@openssh.com": ("path",), "fstatvfs@openssh.com": ("handle",), "fsync@openssh.com": ("handle",),
    "lsetstat@openssh.com": ("path", "attrs"), "limits@openssh.com": (), "expand-path@openssh.com": ("path",),
}
# Extensions whose arguments go to Request.ext_args, in wire order, of the kinds given.
_EXT_ARGS: dict[str, str] = {
    "copy-data": "bqqbq",  # read handle, read offset, read length (0: to EOF), write handle, write offset
    "home-directory": "s",  # username (PROTOCOL: "" for the user's own, which 9.2's sftp-server fails)
    "users-groups-by-id@openssh.com": "ii",  # uids, gids
}


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            raise PacketError("truncated packet")
        chunk, self.pos = self.buf[self.pos:end], end
        return chunk

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def bytes_(self) -> bytes:
        return self.take(self.u32())

    def text(self) -> str:
        return self.bytes_().decode("utf-8", "surrogateescape")

    def read(self, kind: str) -> object:
        if kind == "q":
            return int(_U64.unpack(self.take(8))[0])
        if kind == "i":
            raw = self.bytes_()
            if len(raw) % 4:
                raise PacketError("id list is not a whole number of uint32")
            return tuple(v for (v,) in _U32.iter_unpack(raw))
        return {"s": self.text, "b": self.bytes_, "u": self.u32, "a": self.attrs}[kind]()

    def attrs(self) -> Attrs:
        flags = self.u32()
        size = self.read("q") if flags & ATTR_SIZE else None
        uid, gid = (self.u32(), self.u32()) if flags & ATTR_UIDGID else (None, None)
        perms = self.u32() if flags & ATTR_PERMISSIONS else None
        atime, mtime = (self.u32(), self.u32()) if flags & ATTR_ACMODTIME else (None, None)
        ext = tuple((self.bytes_(), self.bytes_()) for _ in range(self.u32())) if flags & ATTR_EXTENDED else ()
        return Attrs(flags, size, uid, gid, perms, atime, mtime, ext)  # type: ignore[arg-type]

    def pairs(self) -> tuple[tuple[str, bytes], ...]:
        out = []
        while self.pos < len(self.buf):
            out.append((self.text(), self.bytes_()))
        return tuple(out)

    def end(self) -> None:
        if self.pos != len(self.buf):
            raise PacketError(f"{len(self.buf) - self.pos} trailing bytes")


def _open(packet: bytes) -> tuple[int, _Reader]:
    if len(packet) < 5:
        raise PacketError("truncated packet")
    length, ptype = _HEAD.unpack_from(packet)
    if length != len(packet) - 4 or length > MAX_PACKET:
        raise PacketError(f"length field {length} for {len(packet) - 4} bytes (at most {MAX_PACKET})")
    return ptype, _Reader(packet, 5)


def _read_fields(r: _Reader, fields: tuple[str, ...]) -> dict[str, object]:
    out = {name: r.read(_KIND[name]) for name in fields}
    if isinstance(out.get("data"), bytes):
        out["length"] = len(out["data"])  # type: ignore[arg-type]
    return out


def parse_request(packet: bytes) -> Request:
    """Decodes one whole client packet (length prefix included). INIT's extension pairs, if any, are its ext_args."""
    ptype, r = _open(packet)
    if ptype == FXP_INIT:
        return Request(FXP_INIT, None, version=r.u32(), ext_args=r.pairs())
    if ptype != FXP_EXTENDED and ptype not in _REQ_FIELDS:
        raise PacketError(f"unknown request type {ptype}")
    req_id = r.u32()
    if ptype == FXP_EXTENDED:
        name = r.text()
        if name in _EXT_FIELDS:
            req = Request(ptype, req_id, extension=name, **_read_fields(r, _EXT_FIELDS[name]))  # type: ignore[arg-type]
        elif name in _EXT_ARGS:
            req = Request(ptype, req_id, extension=name, ext_args=tuple(r.read(k) for k in _EXT_ARGS[name]))
        else:
            req = Request(ptype, req_id, extension=name, ext_args=(r.take(len(packet) - r.pos),))
    else:
        req = Request(ptype, req_id, **_read_fields(r, _REQ_FIELDS[ptype]))  # type: ignore[arg-type]
    r.end()
    return req


def parse_reply(packet: bytes) -> Reply:
    """Decodes one whole server packet (length prefix included). A STATUS may lack message and language tag (as
    version 2 servers do); its language tag is dropped."""
    ptype, r = _open(packet)
    if ptype == FXP_VERSION:
        return Reply(FXP_VERSION, None, version=r.u32(), extensions=r.pairs())
    req_id = r.u32()
    if ptype == FXP_STATUS:
        code, message = r.u32(), ""
        if r.pos < len(packet):  # version 2 servers may send the bare code
            message, _language_tag = r.text(), r.bytes_()
        reply = Reply(ptype, req_id, code=code, message=message)
    elif ptype == FXP_HANDLE:
        reply = Reply(ptype, req_id, handle=r.bytes_())
    elif ptype == FXP_DATA:
        reply = Reply(ptype, req_id, data=r.bytes_())
    elif ptype == FXP_NAME:
        reply = Reply(ptype, req_id, names=tuple((r.text(), r.text(), r.attrs()) for _ in range(r.u32())))
    elif ptype == FXP_ATTRS:
        reply = Reply(ptype, req_id, attrs=r.attrs())
    elif ptype == FXP_EXTENDED_REPLY:
        reply = Reply(ptype, req_id, data=r.take(len(packet) - r.pos))
    else:
        raise PacketError(f"unknown reply type {ptype}")
    r.end()
    return reply


class _Writer:
    __slots__ = ("parts",)

    def __init__(self, ptype: int, req_id: int | None) -> None:
        self.parts: list[bytes] = [bytes((ptype,))]
        if req_id is not None:
            self.write("u", req_id)

    def write(self, kind: str, v: object) -> None:
        if kind in "uq":
            bits = 32 if kind == "u" else 64
            if not isinstance(v, int) or not 0 <= v < 1 << bits:
                raise PacketError(f"not a uint{bits}: {v!r}")
            self.parts.append((_U32 if bits == 32 else _U64).pack(v))
        elif kind == "s":
            if not isinstance(v, str):
                raise PacketError(f"not a str: {v!r}")
            self.write("b", v.encode("utf-8", "surrogateescape"))
        elif kind in "br":
            if not isinstance(v, bytes):
                raise PacketError(f"not bytes: {v!r}")
            self.parts += [_U32.pack(len(v)), v] if kind == "b" else [v]  # r: raw, unframed
        elif kind == "i":
            if not isinstance(v, tuple | list) or not all(isinstance(i, int) and 0 <= i < 1 << 32 for i in v):
                raise PacketError(f"not a list of uint32 ids: {v!r}")
            self.write("b", b"".join(_U32.pack(i) for i in v))
        elif isinstance(v, Attrs):
            self.attrs(v)
        else:
            raise PacketError(f"not Attrs: {v!r}")

    def attrs(self, a: Attrs) -> None:
        self.write("u", a.flags)
        for bit, kind, values in ((ATTR_SIZE, "q", (a.size,)), (ATTR_UIDGID, "u", (a.uid, a.gid)),
                                  (ATTR_PERMISSIONS, "u", (a.permissions,)), (ATTR_ACMODTIME, "u", (a.atime, a.mtime))):
            for v in values if a.flags & bit else ():
                self.write(kind, v)
        if a.flags & ATTR_EXTENDED:
            self.write("u", len(a.extended))
            for name, value in a.extended:
                self.write("b", name)
                self.write("b", value)

    def pairs(self, pairs: Sequence[object]) -> None:
        for pair in pairs:
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise PacketError(f"not an extension pair: {pair!r}")
            self.write("s", pair[0])
            self.write("b", pair[1])

    def packet(self) -> bytes:
        body = b"".join(self.parts)
        if len(body) > MAX_PACKET:
            raise PacketError(f"packet length {len(body)} over {MAX_PACKET}")
        return _U32.pack(len(body)) + body


def encode_request(r: Request) -> bytes:
    """The inverse of parse_request (a WRITE's length is taken from its data)."""
    w = _Writer(r.type, None if r.type == FXP_INIT else r.id)
    if r.type == FXP_INIT:
        w.write("u", r.version)
        w.pairs(r.ext_args)
    elif r.type in _REQ_FIELDS or (r.type == FXP_EXTENDED and r.extension in _EXT_FIELDS):
        if r.type == FXP_EXTENDED:
            w.write("s", r.extension)
        for name in _REQ_FIELDS.get(r.type) or _EXT_FIELDS[str(r.extension)]:
            w.write(_KIND[name], getattr(r, name))
    elif r.type == FXP_EXTENDED:
        w.write("s", r.extension)
        kinds = _EXT_ARGS.get(str(r.extension), "r")  # r: an unknown extension's raw argument bytes
        if len(r.ext_args) != len(kinds):
            raise PacketError(f"{r.extension} takes {len(kinds)} arguments, not {len(r.ext_args)}")
        for kind, arg in zip(kinds, r.ext_args, strict=True):
            w.write(kind, arg)
    else:
        raise PacketError(f"unknown request type {r.type}")
    return w.packet()


def encode_reply(reply: Reply) -> bytes:
    """The inverse of parse_reply (a STATUS gets the language tag "en")."""
    w = _Writer(reply.type, None if reply.type == FXP_VERSION else reply.id)
    if reply.type == FXP_VERSION:
        w.write("u", reply.version)
        w.pairs(reply.extensions)
    elif reply.type == FXP_STATUS:
        w.write("u", reply.code)
        w.write("s", reply.message)
        w.write("s", "en")
    elif reply.type in (FXP_HANDLE, FXP_DATA):
        w.write("b", reply.handle if reply.type == FXP_HANDLE else reply.data)
    elif reply.type == FXP_NAME:
        w.write("u", len(reply.names))
        for filename, longname, attrs in reply.names:
            w.write("s", filename)
            w.write("s", longname)
            w.write("a", attrs)
    elif reply.type == FXP_ATTRS:
        w.write("a", reply.attrs)
    elif reply.type == FXP_EXTENDED_REPLY:
        w.write("r", reply.data)
    else:
        raise PacketError(f"cannot encode reply type {reply.type}")
    return w.packet()


def status(req_id: int, code: int, message: str) -> bytes:
    return encode_reply(Reply(FXP_STATUS, req_id, code=code, message=message))


def realpath(req_id: int, path: str) -> bytes:
    return encode_request(Request(FXP_REALPATH, req_id, path=path))


def lstat(req_id: int, path: str) -> bytes:
    return encode_request(Request(FXP_LSTAT, req_id, path=path))


def stat(req_id: int, path: str) -> bytes:
    return encode_request(Request(FXP_STAT, req_id, path=path))


def version_packet(version: int, extensions: Sequence[tuple[str, bytes]]) -> bytes:
    return encode_reply(Reply(FXP_VERSION, None, version=version, extensions=tuple(extensions)))


def init_packet(version: int = 3) -> bytes:
    return encode_request(Request(FXP_INIT, None, version=version))


def with_extensions(version_reply: bytes, keep: Callable[[str], bool]) -> bytes:
    """The server's VERSION packet again with only the extensions `keep` accepts."""
    reply = parse_reply(version_reply)
    if reply.type != FXP_VERSION or reply.version is None:
        raise PacketError(f"not a VERSION reply: type {reply.type}")
    return version_packet(reply.version, [(name, value) for name, value in reply.extensions if keep(name)])
