"""The SFTP packet codec (bastion.proxies.sftp.packets): round trips and fuzzing of the framer and the parsers, then
the proof that it speaks what OpenSSH speaks: requests built here drive the real sftp-server (and the effects on disk
are checked), and the streams the real sftp and scp clients send are captured and decoded completely."""

from __future__ import annotations

import os
import pwd
import random
import shutil
import stat as st_mode
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.proxies.sftp import packets as P
from bastion.proxies.sftp.packets import Attrs, Reply, Request

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SFTP_SERVER = next((p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
                                "/usr/libexec/sftp-server") if os.access(p, os.X_OK)), None)
needs_server = pytest.mark.skipif(SFTP_SERVER is None, reason="no OpenSSH sftp-server installed")


def framed(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


# ---- realistic examples of every request type ----------------------------------------------------------------------

A644 = Attrs.of(permissions=0o100644)
EXAMPLES = [
    Request(P.FXP_INIT, None, version=3),
    Request(P.FXP_INIT, None, version=3, ext_args=(("ext@example.com", b"1"),)),
    Request(P.FXP_OPEN, 1, path="/srv/up.bin", pflags=P.FXF_WRITE | P.FXF_CREAT | P.FXF_TRUNC, attrs=A644),
    Request(P.FXP_OPEN, 2, path="/etc/hosts", pflags=P.FXF_READ, attrs=Attrs()),
    Request(P.FXP_CLOSE, 3, handle=b"\x00\x00\x00\x01"),
    Request(P.FXP_READ, 4, handle=b"h", offset=1 << 40, length=261120),
    Request(P.FXP_WRITE, 5, handle=b"h", offset=32768, length=5, data=b"hello"),
    Request(P.FXP_LSTAT, 6, path="/tmp/l"),
    Request(P.FXP_FSTAT, 7, handle=b"h"),
    Request(P.FXP_SETSTAT, 8, path="/tmp/f", attrs=Attrs.of(size=0, uid=1000, gid=1000, permissions=0o600,
                                                            atime=1700000000, mtime=1700000001)),
    Request(P.FXP_FSETSTAT, 9, handle=b"h", attrs=Attrs.of(atime=1, mtime=2, extended=((b"a@x", b"v"),))),
    Request(P.FXP_OPENDIR, 10, path="/home/u"),
    Request(P.FXP_READDIR, 11, handle=b"d"),
    Request(P.FXP_REMOVE, 12, path="/tmp/x"),
    Request(P.FXP_MKDIR, 13, path="/tmp/d", attrs=Attrs.of(permissions=0o755)),
    Request(P.FXP_RMDIR, 14, path="/tmp/d"),
    Request(P.FXP_REALPATH, 15, path="."),
    Request(P.FXP_STAT, 16, path="caf\xe9/\udcff"),  # non-utf-8 bytes survive as surrogates
    Request(P.FXP_RENAME, 17, path="/a", path2="/b"),
    Request(P.FXP_READLINK, 18, path="/l"),
    Request(P.FXP_SYMLINK, 19, path="/link", path2="/target"),
    Request(P.FXP_EXTENDED, 20, extension="posix-rename@openssh.com", path="/a", path2="/b"),
    Request(P.FXP_EXTENDED, 21, extension="hardlink@openssh.com", path="/a", path2="/b"),
    Request(P.FXP_EXTENDED, 22, extension="statvfs@openssh.com", path="/"),
    Request(P.FXP_EXTENDED, 23, extension="fstatvfs@openssh.com", handle=b"h"),
    Request(P.FXP_EXTENDED, 24, extension="fsync@openssh.com", handle=b"h"),
    Request(P.FXP_EXTENDED, 25, extension="lsetstat@openssh.com", path="/l", attrs=Attrs.of(atime=1, mtime=2)),
    Request(P.FXP_EXTENDED, 26, extension="limits@openssh.com"),
    Request(P.FXP_EXTENDED, 27, extension="expand-path@openssh.com", path="~/x"),
    Request(P.FXP_EXTENDED, 28, extension="copy-data", ext_args=(b"r", 0, 0, b"w", 4096)),
    Request(P.FXP_EXTENDED, 29, extension="home-directory", ext_args=("alice",)),
    Request(P.FXP_EXTENDED, 30, extension="users-groups-by-id@openssh.com", ext_args=((0, 1000), ())),
    Request(P.FXP_EXTENDED, 31, extension="nope@example.com", ext_args=(b"\x00\x00\x00\x01zz",)),
]


def test_examples_cover_every_request_type() -> None:
    assert {r.type for r in EXAMPLES} == set(P._REQ_FIELDS) | {P.FXP_INIT, P.FXP_EXTENDED}
    assert {r.extension for r in EXAMPLES} >= set(P._EXT_FIELDS) | set(P._EXT_ARGS)


@pytest.mark.parametrize("req", EXAMPLES, ids=lambda r: f"{r.type}-{r.extension or ''}")
def test_request_round_trip(req: Request) -> None:
    packet = P.encode_request(req)
    assert P.parse_request(packet) == req
    assert P.encode_request(P.parse_request(packet)) == packet
    assert P.Framer().feed(packet) == [packet]


def test_symlink_is_sent_target_first_as_openssh_does() -> None:
    packet = P.encode_request(Request(P.FXP_SYMLINK, 7, path="LINK", path2="TARGET"))
    assert packet[9:] == framed(b"TARGET")[:4] + b"TARGET" + struct.pack(">I", 4) + b"LINK"


def test_builders_and_with_extensions() -> None:
    assert P.init_packet() == bytes.fromhex("00000005 01 00000003")
    assert P.parse_reply(P.status(9, P.FX_PERMISSION_DENIED, "denied")) == Reply(
        P.FXP_STATUS, 9, code=P.FX_PERMISSION_DENIED, message="denied")
    assert P.status(1, 0, "")[-6:] == b"\x00\x00\x00\x02en"
    assert P.parse_request(P.realpath(1, ".")) == Request(P.FXP_REALPATH, 1, path=".")
    assert P.parse_request(P.stat(2, "/x")).type == P.FXP_STAT
    assert P.parse_request(P.lstat(3, "/x")).type == P.FXP_LSTAT
    version = P.version_packet(3, [("posix-rename@openssh.com", b"1"), ("copy-data", b"1"), ("x@y", b"2")])
    kept = P.with_extensions(version, lambda name: name.endswith("@openssh.com"))
    assert P.parse_reply(kept).extensions == (("posix-rename@openssh.com", b"1"),)
    with pytest.raises(P.PacketError):
        P.with_extensions(P.status(1, 0, ""), lambda name: True)


def test_strictness() -> None:
    good = P.encode_request(Request(P.FXP_REMOVE, 1, path="/x"))
    for bad in (good + b"\x00", good[:-1], framed(good[4:] + b"z"), framed(b"\x63" + good[5:]), framed(b"\x02"),
                framed(bytes([P.FXP_STATUS]) + good[5:]), b"", b"\x00\x00\x00"):
        with pytest.raises(P.PacketError):
            P.parse_request(bad)
    with pytest.raises(P.PacketError):  # uid/gid lists are whole uint32s
        P.parse_request(framed(bytes([P.FXP_EXTENDED]) + b"\0\0\0\1" + framed(b"users-groups-by-id@openssh.com")
                               + framed(b"\0\0\0") + framed(b"")))
    with pytest.raises(P.PacketError):
        P.parse_reply(good)
    with pytest.raises(P.PacketError):  # over MAX_PACKET, even if whole
        P.parse_request(framed(bytes([P.FXP_WRITE]) + bytes(P.MAX_PACKET)))
    with pytest.raises(P.PacketError):
        P.encode_request(Request(P.FXP_WRITE, 1, handle=b"h", offset=0, data=bytes(P.MAX_PACKET)))
    for unencodable in (Request(P.FXP_OPEN, 1, path="/x", pflags=1), Request(P.FXP_CLOSE, 1 << 32, handle=b""),
                        Request(P.FXP_SETSTAT, 1, path="/x", attrs=Attrs(flags=P.ATTR_SIZE)),
                        Request(P.FXP_EXTENDED, 1, extension="copy-data", ext_args=(b"r", 0)),
                        Request(P.FXP_EXTENDED, 1, extension="x@y"), Request(P.FXP_STATUS, 1)):
        with pytest.raises(P.PacketError):
            P.encode_request(unencodable)
    for length in (0, P.MAX_PACKET + 1):
        with pytest.raises(P.PacketError):
            P.Framer().feed(struct.pack(">I", length))


def test_status_without_message_and_language_tag() -> None:
    assert P.parse_reply(framed(bytes([P.FXP_STATUS]) + struct.pack(">II", 4, 1))) == Reply(P.FXP_STATUS, 4, code=1)
    with pytest.raises(P.PacketError):  # a message without its language tag
        P.parse_reply(framed(bytes([P.FXP_STATUS]) + struct.pack(">II", 4, 1) + framed(b"m")))


# ---- property tests ------------------------------------------------------------------------------------------------

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
blob = st.binary(max_size=40)
paths = st.one_of(st.text(max_size=20), blob.map(lambda b: b.decode("utf-8", "surrogateescape")))


@st.composite
def attrs(draw: st.DrawFn) -> Attrs:
    flags = draw(st.sets(st.sampled_from([P.ATTR_SIZE, P.ATTR_UIDGID, P.ATTR_PERMISSIONS, P.ATTR_ACMODTIME,
                                          P.ATTR_EXTENDED])))
    def pick(bit: int, s: st.SearchStrategy[int]) -> int | None:
        return draw(s) if bit in flags else None
    ext = tuple(draw(st.lists(st.tuples(blob, blob), max_size=3))) if P.ATTR_EXTENDED in flags else ()
    return Attrs(sum(flags), pick(P.ATTR_SIZE, u64), pick(P.ATTR_UIDGID, u32), pick(P.ATTR_UIDGID, u32),
                 pick(P.ATTR_PERMISSIONS, u32), pick(P.ATTR_ACMODTIME, u32), pick(P.ATTR_ACMODTIME, u32), ext)


FIELD_STRATEGY: dict[str, st.SearchStrategy[object]] = {"path": paths, "path2": paths, "handle": blob, "data": blob,
                                                        "pflags": u32, "length": u32, "offset": u64, "attrs": attrs()}
ARG_STRATEGY: dict[str, st.SearchStrategy[object]] = {"b": blob, "s": paths, "q": u64,
                                                      "i": st.lists(u32, max_size=4).map(tuple)}


@st.composite
def requests(draw: st.DrawFn, unknown_extensions: bool = True, init_extensions: bool = True) -> Request:
    kinds: list[int | str] = [*P._REQ_FIELDS, *P._EXT_FIELDS, *P._EXT_ARGS, "init"]
    kind = draw(st.sampled_from(kinds + (["unknown"] if unknown_extensions else [])))
    if kind == "init":
        pairs = draw(st.lists(st.tuples(paths, blob), max_size=3)) if init_extensions else []
        return Request(P.FXP_INIT, None, version=draw(u32), ext_args=tuple(pairs))
    if kind == "unknown":
        name = draw(paths.filter(lambda n: n not in P._EXT_FIELDS and n not in P._EXT_ARGS))
        return Request(P.FXP_EXTENDED, draw(u32), extension=name, ext_args=(draw(blob),))
    if isinstance(kind, str) and kind in P._EXT_ARGS:
        args = tuple(draw(ARG_STRATEGY[k]) for k in P._EXT_ARGS[kind])
        return Request(P.FXP_EXTENDED, draw(u32), extension=kind, ext_args=args)
    names = P._REQ_FIELDS[kind] if isinstance(kind, int) else P._EXT_FIELDS[kind]
    fields = {name: draw(FIELD_STRATEGY[name]) for name in names}
    if "data" in fields:
        fields["length"] = len(fields["data"])  # type: ignore[arg-type]
    ptype, ext = (kind, None) if isinstance(kind, int) else (P.FXP_EXTENDED, kind)
    return Request(ptype, draw(u32), extension=ext, **fields)  # type: ignore[arg-type]


@st.composite
def replies(draw: st.DrawFn, open_ended: bool = True) -> Reply:
    rid = draw(u32)
    options = [Reply(P.FXP_STATUS, rid, code=draw(u32), message=draw(paths)),
               Reply(P.FXP_HANDLE, rid, handle=draw(blob)), Reply(P.FXP_DATA, rid, data=draw(blob)),
               Reply(P.FXP_NAME, rid, names=tuple(draw(st.lists(st.tuples(paths, paths, attrs()), max_size=3)))),
               Reply(P.FXP_ATTRS, rid, attrs=draw(attrs())), Reply(P.FXP_VERSION, None, version=draw(u32))]
    if open_ended:  # these may end anywhere after a field
        options += [Reply(P.FXP_EXTENDED_REPLY, rid, data=draw(blob)),
                    Reply(P.FXP_VERSION, None, version=3, extensions=tuple(draw(st.lists(st.tuples(paths, blob)))))]
    return draw(st.sampled_from(options))


@FUZZ
@given(requests())
def test_any_request_round_trips(req: Request) -> None:
    packet = P.encode_request(req)
    assert P.parse_request(packet) == req
    assert P.encode_request(P.parse_request(packet)) == packet


@FUZZ
@given(replies())
def test_any_reply_round_trips(reply: Reply) -> None:
    packet = P.encode_reply(reply)
    assert P.parse_reply(packet) == reply
    assert P.encode_reply(P.parse_reply(packet)) == packet


@FUZZ
@given(st.lists(st.one_of(requests().map(P.encode_request), replies().map(P.encode_reply)), max_size=12),
       st.lists(st.integers(0, 400), max_size=30), st.binary(max_size=3))
def test_framer_any_chunking(packets: list[bytes], cuts: list[int], tail: bytes) -> None:
    stream = b"".join(packets) + tail
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    framer, out = P.Framer(), []
    for a, b in zip(bounds, bounds[1:], strict=False):
        out += framer.feed(stream[a:b])
    assert out == packets
    assert framer.pending() == len(tail)


@FUZZ
@given(st.binary(max_size=300), st.integers(0, 255), st.booleans())
def test_parsers_raise_only_packet_error(data: bytes, ptype: int, prefixed: bool) -> None:
    for packet in (data, framed(bytes([ptype]) + data) if prefixed else data):
        for parse in (P.parse_request, P.parse_reply):
            try:
                parse(packet)
            except P.PacketError:
                pass


@FUZZ
@given(st.one_of(requests().map(P.encode_request), replies().map(P.encode_reply)), st.data())
def test_mutated_packets_raise_only_packet_error(packet: bytes, data: st.DataObject) -> None:
    mutated = bytearray(packet)
    for _ in range(data.draw(st.integers(1, 4))):
        mutated[data.draw(st.integers(4, len(mutated) - 1))] = data.draw(st.integers(0, 255))
    for parse in (P.parse_request, P.parse_reply):
        try:
            parse(bytes(mutated))
        except P.PacketError:
            pass


@FUZZ
@given(requests(unknown_extensions=False, init_extensions=False), st.data())
def test_truncated_requests_raise(req: Request, data: st.DataObject) -> None:
    packet = P.encode_request(req)
    cut = data.draw(st.integers(0, len(packet) - 1))
    with pytest.raises(P.PacketError):
        P.parse_request(packet[:cut])  # the length prefix no longer matches
    if cut > 4:
        with pytest.raises(P.PacketError):
            P.parse_request(framed(packet[4:cut]))  # a consistent prefix around a body cut short


@FUZZ
@given(replies(open_ended=False), st.data())
def test_truncated_replies_raise(reply: Reply, data: st.DataObject) -> None:
    packet = P.encode_reply(reply)
    cut = data.draw(st.integers(0, len(packet) - 1))
    with pytest.raises(P.PacketError):
        P.parse_reply(packet[:cut])
    if cut > 4 and not (reply.type == P.FXP_STATUS and cut == 13):  # a bare status code is a valid STATUS
        with pytest.raises(P.PacketError):
            P.parse_reply(framed(packet[4:cut]))


def test_framer_bulk_is_linear() -> None:
    """200 MB of 32-255 KiB WRITE packets in arbitrary chunks, then one packet a few bytes at a time."""
    rng, payload = random.Random(7), os.urandom(255 * 1024)
    packets: list[bytes] = []
    total = 0
    while total < 200 * 1024 * 1024:
        data = payload[:rng.randint(32 * 1024, 255 * 1024)]
        packets.append(P.encode_request(Request(P.FXP_WRITE, len(packets), handle=b"h", offset=total, data=data)))
        total += len(packets[-1])
    stream, framer, out, pos = b"".join(packets), P.Framer(), [], 0
    started = time.perf_counter()
    while pos < len(stream):
        step = rng.randint(1, 300 * 1024)
        out += framer.feed(stream[pos:pos + step])
        pos += step
    slow = packets[0] * 2
    for i in range(0, len(slow), 7):
        out += framer.feed(slow[i:i + 7])
    assert time.perf_counter() - started < 20  # takes well under a second; quadratic copying takes minutes
    assert out == [*packets, packets[0], packets[0]] and framer.pending() == 0


# ---- against the real OpenSSH sftp-server --------------------------------------------------------------------------

class Server:
    def __init__(self, cwd: Path) -> None:
        assert SFTP_SERVER is not None
        self.proc = subprocess.Popen([SFTP_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=cwd)
        self.framer, self.queue, self.next_id = P.Framer(), list[bytes](), 100
        self.extensions: dict[str, bytes] = {}

    def send(self, packet: bytes) -> Reply | None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(packet)
            self.proc.stdin.flush()
        except BrokenPipeError:  # it hung up
            return None
        while not self.queue:
            chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
            if not chunk:
                return None
            self.queue += self.framer.feed(chunk)
        return P.parse_reply(self.queue.pop(0))

    def call(self, ptype: int, **fields: object) -> Reply:
        self.next_id += 1
        reply = self.send(P.encode_request(Request(ptype, self.next_id, **fields)))  # type: ignore[arg-type]
        assert reply is not None and reply.id == self.next_id
        return reply

    def ok(self, ptype: int, **fields: object) -> None:
        reply = self.call(ptype, **fields)
        assert (reply.type, reply.code) == (P.FXP_STATUS, P.FX_OK), reply

    def handle(self, ptype: int, **fields: object) -> bytes:
        reply = self.call(ptype, **fields)
        assert reply.type == P.FXP_HANDLE and reply.handle, reply
        return reply.handle

    def ext(self, name: str, **fields: object) -> Reply:
        return self.call(P.FXP_EXTENDED, extension=name, **fields)

    def close(self) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.close()
        except BrokenPipeError:  # it had hung up with our bytes unread
            pass
        self.proc.stdout.close()
        return self.proc.wait(10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path)
    version = srv.send(P.init_packet())
    assert version is not None and version.type == P.FXP_VERSION and version.version == 3
    srv.extensions = dict(version.extensions)
    yield srv
    srv.close()


@needs_server
def test_server_advertises_exactly_the_extensions_decoded(server: Server) -> None:
    assert set(server.extensions) == set(P._EXT_FIELDS) | set(P._EXT_ARGS)


@needs_server
def test_real_server_files(server: Server, tmp_path: Path) -> None:
    f, content = tmp_path / "f.bin", os.urandom(300_000)
    reply = server.call(P.FXP_REALPATH, path=".")
    assert reply.type == P.FXP_NAME and reply.names[0][0] == str(tmp_path.resolve())
    h = server.handle(P.FXP_OPEN, path=str(f), pflags=P.FXF_WRITE | P.FXF_CREAT | P.FXF_TRUNC,
                      attrs=Attrs.of(permissions=0o640))
    for off in range(0, len(content), 200_000):
        server.ok(P.FXP_WRITE, handle=h, offset=off, data=content[off:off + 200_000])
    server.ok(P.FXP_EXTENDED, extension="fsync@openssh.com", handle=h)
    fstat = server.call(P.FXP_FSTAT, handle=h)
    assert fstat.attrs is not None and fstat.attrs.size == len(content)
    server.ok(P.FXP_CLOSE, handle=h)
    assert f.read_bytes() == content and st_mode.S_IMODE(f.stat().st_mode) == 0o640
    stat = server.call(P.FXP_STAT, path=str(f)).attrs
    assert stat is not None and stat.size == len(content) and stat.permissions == st_mode.S_IFREG | 0o640
    assert stat.uid == os.getuid() and stat.mtime == int(f.stat().st_mtime)
    h = server.handle(P.FXP_OPEN, path=str(f), pflags=P.FXF_READ, attrs=Attrs())
    data = server.call(P.FXP_READ, handle=h, offset=100, length=1000)
    assert data.type == P.FXP_DATA and data.data == content[100:1100]
    eof = server.call(P.FXP_READ, handle=h, offset=len(content), length=1000)
    assert (eof.type, eof.code) == (P.FXP_STATUS, P.FX_EOF)
    dst = server.handle(P.FXP_OPEN, path=str(tmp_path / "copy"), pflags=P.FXF_WRITE | P.FXF_CREAT, attrs=Attrs())
    server.ok(P.FXP_EXTENDED, extension="copy-data", ext_args=(h, 0, 0, dst, 0))
    server.ok(P.FXP_FSETSTAT, handle=dst, attrs=Attrs.of(permissions=0o600))
    for handle in (h, dst):
        server.ok(P.FXP_CLOSE, handle=handle)
    assert (tmp_path / "copy").read_bytes() == content and st_mode.S_IMODE((tmp_path / "copy").stat().st_mode) == 0o600
    server.ok(P.FXP_SETSTAT, path=str(f), attrs=Attrs.of(permissions=0o604, atime=1_000_000, mtime=2_000_000))
    assert st_mode.S_IMODE(f.stat().st_mode) == 0o604 and f.stat().st_mtime == 2_000_000
    missing = server.call(P.FXP_STAT, path=str(tmp_path / "missing"))
    assert (missing.code, missing.message) == (P.FX_NO_SUCH_FILE, "No such file")


@needs_server
def test_real_server_namespace(server: Server, tmp_path: Path) -> None:
    d, f = tmp_path / "d", tmp_path / "f"
    f.write_bytes(b"x")
    server.ok(P.FXP_MKDIR, path=str(d), attrs=Attrs.of(permissions=0o750))
    assert d.is_dir() and st_mode.S_IMODE(d.stat().st_mode) == 0o750
    server.ok(P.FXP_RENAME, path=str(f), path2=str(d / "g"))
    assert not f.exists() and (d / "g").read_bytes() == b"x"
    server.ok(P.FXP_EXTENDED, extension="posix-rename@openssh.com", path=str(d / "g"), path2=str(d / "h"))
    server.ok(P.FXP_EXTENDED, extension="hardlink@openssh.com", path=str(d / "h"), path2=str(d / "hard"))
    assert (d / "hard").stat().st_ino == (d / "h").stat().st_ino
    # path is the link created, path2 what it points to: the real server creates it that way round
    server.ok(P.FXP_SYMLINK, path=str(tmp_path / "link"), path2=str(d / "h"))
    assert os.readlink(tmp_path / "link") == str(d / "h")
    assert server.call(P.FXP_READLINK, path=str(tmp_path / "link")).names[0][0] == str(d / "h")
    lst = server.call(P.FXP_LSTAT, path=str(tmp_path / "link")).attrs
    assert lst is not None and lst.permissions is not None and st_mode.S_ISLNK(lst.permissions)
    server.ok(P.FXP_EXTENDED, extension="lsetstat@openssh.com", path=str(tmp_path / "link"),
              attrs=Attrs.of(atime=1_000_000, mtime=1_500_000))
    assert os.lstat(tmp_path / "link").st_mtime == 1_500_000 and (d / "h").stat().st_mtime != 1_500_000
    h = server.handle(P.FXP_OPENDIR, path=str(d))
    names: set[str] = set()
    while (batch := server.call(P.FXP_READDIR, handle=h)).type == P.FXP_NAME:
        names |= {name for name, longname, attrs in batch.names if name in longname and attrs.size is not None}
    assert batch.code == P.FX_EOF and names == {".", "..", "h", "hard"}
    server.ok(P.FXP_CLOSE, handle=h)
    for path in (d / "h", d / "hard", tmp_path / "link"):
        server.ok(P.FXP_REMOVE, path=str(path))
    server.ok(P.FXP_RMDIR, path=str(d))
    assert sorted(os.listdir(tmp_path)) == []


@needs_server
def test_real_server_extensions_replies(server: Server, tmp_path: Path) -> None:
    limits = server.ext("limits@openssh.com")
    assert limits.type == P.FXP_EXTENDED_REPLY and limits.data is not None
    max_packet, max_read, max_write, _handles = struct.unpack(">4Q", limits.data)
    assert (max_packet, max_read, max_write) == (P.SFTP_MAX_MSG_LENGTH, P.SFTP_MAX_MSG_LENGTH - 1024,
                                                 P.SFTP_MAX_MSG_LENGTH - 1024) and max_packet < P.MAX_PACKET
    statvfs = server.ext("statvfs@openssh.com", path=str(tmp_path))
    assert statvfs.type == P.FXP_EXTENDED_REPLY and len(statvfs.data or b"") == 11 * 8
    # sftp-server takes its working directory for "~" (sshd starts it in the home directory)
    assert server.ext("expand-path@openssh.com", path="~/x").names[0][0] == str(tmp_path.resolve() / "x")
    me = pwd.getpwuid(os.getuid())
    assert server.ext("home-directory", ext_args=(me.pw_name,)).names[0][0] == me.pw_dir
    ids = server.ext("users-groups-by-id@openssh.com", ext_args=((os.getuid(),), (os.getgid(),)))
    assert ids.type == P.FXP_EXTENDED_REPLY
    unknown = server.ext("nope@example.com", ext_args=(b"",))
    assert (unknown.type, unknown.code) == (P.FXP_STATUS, P.FX_OP_UNSUPPORTED)


@needs_server
def test_real_server_packet_size_limit(server: Server, tmp_path: Path) -> None:
    """sftp-server accepts a length field of exactly SFTP_MAX_MSG_LENGTH and hangs up on one byte more: MAX_PACKET
    is that plus 1 KiB of slack."""
    h = server.handle(P.FXP_OPEN, path=str(tmp_path / "big"), pflags=P.FXF_WRITE | P.FXF_CREAT, attrs=Attrs())
    overhead = len(P.encode_request(Request(P.FXP_WRITE, 1, handle=h, offset=0, data=b""))) - 4
    server.ok(P.FXP_WRITE, handle=h, offset=0, data=bytes(P.SFTP_MAX_MSG_LENGTH - overhead))
    server.next_id += 1
    too_big = P.encode_request(Request(P.FXP_WRITE, server.next_id, handle=h, offset=0,
                                       data=bytes(P.SFTP_MAX_MSG_LENGTH - overhead + 1)))
    assert P.Framer().feed(too_big) == [too_big]  # within the codec's slack
    assert server.send(too_big) is None and server.proc.wait(10) != 0


# ---- what the real sftp and scp clients send -----------------------------------------------------------------------

def recorder(tmp_path: Path, name: str) -> tuple[Path, Path, Path]:
    """A program that stands in for sftp-server (or for ssh, ignoring its arguments), teeing both directions."""
    script, sent, received = tmp_path / f"{name}.sh", tmp_path / f"{name}.client", tmp_path / f"{name}.server"
    script.write_text(f"#!/bin/sh\ntee '{sent}' | '{SFTP_SERVER}' | tee '{received}'\n")
    script.chmod(0o755)
    return script, sent, received


def decode_capture(sent: Path, received: Path) -> list[Request]:
    framer = P.Framer()
    requests_ = [P.parse_request(p) for p in framer.feed(sent.read_bytes())]
    assert framer.pending() == 0 and requests_[0].type == P.FXP_INIT
    framer = P.Framer()
    replies_ = [P.parse_reply(p) for p in framer.feed(received.read_bytes())]
    assert framer.pending() == 0 and replies_[0].type == P.FXP_VERSION
    assert sorted(r.id for r in requests_[1:]) == sorted(r.id for r in replies_[1:])  # type: ignore[type-var]
    return requests_


def has(reqs: list[Request], ptype: int, **fields: object) -> bool:
    return any(r.type == ptype and all(getattr(r, k) == v for k, v in fields.items()) for r in reqs)


@needs_server
@pytest.mark.skipif(shutil.which("sftp") is None, reason="no OpenSSH sftp client")
def test_real_sftp_client_stream_decodes(tmp_path: Path) -> None:
    script, sent, received = recorder(tmp_path, "sftp")
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    remote.mkdir()
    content = os.urandom(700_000)
    (local / "up.bin").write_bytes(content)
    r = str(remote)
    batch = tmp_path / "batch"
    batch.write_text(f"put {local}/up.bin {r}/a.bin\nget {r}/a.bin {local}/down.bin\nmkdir {r}/d\n"
                     f"rename {r}/a.bin {r}/d/b.bin\nchmod 600 {r}/d/b.bin\nln -s {r}/d/b.bin {r}/link\n"
                     f"ls -l {r}\nmkdir {r}/gone\nrmdir {r}/gone\nput {local}/up.bin {r}/tmp.bin\nrm {r}/tmp.bin\n")
    run = subprocess.run(["sftp", "-b", str(batch), "-D", str(script)], capture_output=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert (local / "down.bin").read_bytes() == content == (remote / "d" / "b.bin").read_bytes()
    assert os.readlink(remote / "link") == f"{r}/d/b.bin"
    assert sorted(os.listdir(remote)) == ["d", "link"]
    reqs = decode_capture(sent, received)
    writes = [q for q in reqs if q.type == P.FXP_WRITE]
    assert sum(q.length or 0 for q in writes) == 2 * len(content)
    upload = P.FXF_WRITE | P.FXF_CREAT | P.FXF_TRUNC
    assert [q.pflags for q in reqs if q.type == P.FXP_OPEN and q.path == f"{r}/a.bin"] == [upload, P.FXF_READ]
    assert has(reqs, P.FXP_OPEN, path=f"{r}/tmp.bin", pflags=upload)
    assert has(reqs, P.FXP_MKDIR, path=f"{r}/d") and has(reqs, P.FXP_RMDIR, path=f"{r}/gone")
    assert has(reqs, P.FXP_EXTENDED, extension="posix-rename@openssh.com", path=f"{r}/a.bin", path2=f"{r}/d/b.bin")
    assert any(q.type == P.FXP_SETSTAT and q.path == f"{r}/d/b.bin" and q.attrs and q.attrs.permissions == 0o600
               for q in reqs)
    assert has(reqs, P.FXP_SYMLINK, path=f"{r}/link", path2=f"{r}/d/b.bin")  # link first, whatever the wire order
    assert has(reqs, P.FXP_OPENDIR, path=f"{r}/") and has(reqs, P.FXP_READDIR)
    assert has(reqs, P.FXP_REMOVE, path=f"{r}/tmp.bin")


@needs_server
@pytest.mark.skipif(shutil.which("scp") is None, reason="no OpenSSH scp client")
def test_real_scp_client_stream_decodes(tmp_path: Path) -> None:
    """scp -S runs a program in place of ssh; in SFTP mode (-s, the default since OpenSSH 9.0) it speaks SFTP to it."""
    content = os.urandom(300_000)
    (tmp_path / "up.bin").write_bytes(content)
    for direction, args in (("up", [str(tmp_path / "up.bin"), f"host:{tmp_path}/remote.bin"]),
                            ("down", [f"host:{tmp_path}/remote.bin", str(tmp_path / "down.bin")])):
        script, sent, received = recorder(tmp_path, direction)
        ssh = tmp_path / f"ssh-{direction}"
        ssh.write_text(f"#!/bin/sh\nexec '{script}'\n")
        ssh.chmod(0o755)
        run = subprocess.run(["scp", "-s", "-S", str(ssh), *args], capture_output=True, timeout=60, check=False)
        assert run.returncode == 0, run.stderr
        reqs = decode_capture(sent, received)
        opened = [q for q in reqs if q.type == P.FXP_OPEN and q.path == f"{tmp_path}/remote.bin"]
        assert len(opened) == 1 and opened[0].pflags is not None
        if direction == "up":
            assert opened[0].pflags & P.FXF_WRITE and opened[0].pflags & P.FXF_CREAT
            assert sum(len(q.data or b"") for q in reqs if q.type == P.FXP_WRITE) == len(content)
        else:
            assert opened[0].pflags == P.FXF_READ and has(reqs, P.FXP_READ)
    assert (tmp_path / "remote.bin").read_bytes() == content == (tmp_path / "down.bin").read_bytes()
