#!/usr/bin/env python3
"""bastion-guard: runs one SSH session under ptrace and has the bastion judge every program it executes.

Installed alone on a target as /usr/local/bin/bastion-guard and run by sshd as `bastion-guard --session ID`; the
SSH channel (fds 0 and 1) carries frames both ways. The design and the wire protocol are in docs/guard.md of the
bastion repository. Python >= 3.9, standard library only; importing this module does nothing (the daemon imports it
for the frame codec).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import pwd
import re
import select
import signal
import stat
import struct
import sys
import termios
import time
import traceback
from typing import Any, NoReturn

VERSION = "1"
MAX_FRAME = 1 << 20

# ---------------------------------------------------------------------------------------------------------------
# frame codec: 1 ASCII letter, a 4-byte big-endian length (at most MAX_FRAME), the payload

_LENGTH = struct.Struct(">I")


def _is_letter(code: int) -> bool:
    return 0x41 <= code <= 0x5A or 0x61 <= code <= 0x7A


def encode(kind: str, payload: bytes = b"") -> bytes:
    """One frame; ValueError for a type that is not one ASCII letter or a payload over MAX_FRAME."""
    if len(kind) != 1 or not _is_letter(ord(kind)):
        raise ValueError(f"frame type must be one ASCII letter, not {kind!r}")
    if len(payload) > MAX_FRAME:
        raise ValueError(f"frame payload of {len(payload)} bytes exceeds {MAX_FRAME}")
    return kind.encode("ascii") + _LENGTH.pack(len(payload)) + bytes(payload)


def encode_json(kind: str, obj: object) -> bytes:
    """A frame whose payload is JSON (ASCII only: lone surrogates of undecodable argv bytes stay \\udcxx escapes)."""
    return encode(kind, json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode("ascii"))


class FrameError(Exception):
    """The byte stream is not a sequence of frames (a protocol error)."""


class FrameReader:
    """Splits a byte stream into frames; partial data stays buffered until the rest arrives."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        self._buf += data
        frames: list[tuple[str, bytes]] = []
        pos = 0
        try:
            while pos < len(self._buf):
                code = self._buf[pos]
                if not _is_letter(code):
                    raise FrameError(f"bad frame type byte 0x{code:02x}")
                if len(self._buf) - pos < 5:
                    break
                (length,) = _LENGTH.unpack_from(self._buf, pos + 1)
                if length > MAX_FRAME:
                    raise FrameError(f"frame length {length} exceeds {MAX_FRAME}")
                end = pos + 5 + length
                if end > len(self._buf):
                    break
                frames.append((chr(code), bytes(self._buf[pos + 5 : end])))
                pos = end
        finally:
            del self._buf[:pos]
        return frames


# ---------------------------------------------------------------------------------------------------------------
# the kernel interfaces (ctypes, loaded on first use)

PTRACE_CONT = 7
PTRACE_GETEVENTMSG = 0x4201
PTRACE_SEIZE = 0x4206
PTRACE_LISTEN = 0x4208
PTRACE_EVENT_FORK = 1
PTRACE_EVENT_VFORK = 2
PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_EXEC = 4
PTRACE_EVENT_STOP = 128
PTRACE_O_TRACEFORK = 0x2
PTRACE_O_TRACEVFORK = 0x4
PTRACE_O_TRACECLONE = 0x8
PTRACE_O_TRACEEXEC = 0x10
PTRACE_O_EXITKILL = 0x100000
TRACE_OPTIONS = (
    PTRACE_O_EXITKILL | PTRACE_O_TRACEEXEC | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACECLONE
)
WALL = 0x40000000  # __WALL: threads and clone children too
PR_SET_DUMPABLE = 4

_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        lib.ptrace.restype = ctypes.c_long
        lib.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        lib.prctl.restype = ctypes.c_int
        _libc = lib
    return _libc


def _ptrace(request: int, pid: int, addr: int = 0, data: int = 0) -> int:
    ctypes.set_errno(0)
    result = int(_lib().ptrace(request, pid, addr, data))
    if result == -1:
        err = ctypes.get_errno()
        if err:
            raise OSError(err, os.strerror(err))
    return result


def _event_msg(pid: int) -> int:
    msg = ctypes.c_ulong(0)
    _ptrace(PTRACE_GETEVENTMSG, pid, 0, ctypes.addressof(msg))
    return int(msg.value)


def _prctl(option: int, arg2: int = 0, arg3: int = 0) -> None:
    ctypes.set_errno(0)
    if _lib().prctl(option, arg2, arg3, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _set_not_dumpable() -> None:
    _prctl(PR_SET_DUMPABLE, 0)


# clone(CLONE_UNTRACED) makes a child that PTRACE_O_TRACEFORK does not attach: it would run (and exec) unseen and
# outlive the guard. A seccomp filter, inherited by the whole session, refuses that flag (EPERM) and clone3 (ENOSYS:
# its flags are in memory a filter cannot read; libc falls back to clone).
# A stopped guard judges nothing but ends nothing either: what already runs would go on after the session, and so
# would the session if the sshd process that holds its channel were stopped. The same filter refuses (EPERM) the
# stop signals (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU: 19-22 on every architecture below) sent to the guard or to the
# processes of the same user above it (by pid, by process group, or to -1: everything), to any pidfd, and as the
# signal of a file descriptor's owner (fcntl F_SETSIG). Per architecture the kernel may run: (AUDIT_ARCH, syscall
# number mask, clone, clone3, offset of clone's flags (low 32 bits) in struct seccomp_data, (syscall, index of its
# signal argument) for kill, tkill, tgkill, rt_sigqueueinfo, rt_tgsigqueueinfo (their target is argument 0), the
# fcntl syscalls).
CLONE_UNTRACED = 0x00800000
_X32_OFF = 0xBFFFFFFF  # x32 syscalls are x86_64 numbers with bit 30 set (its rt_sig*queueinfo are 524 and 536)
_KILLS_X86_64 = ((62, 1), (200, 1), (234, 2), (129, 1), (297, 2), (524, 1), (536, 2))
_KILLS_32 = ((37, 1), (238, 1), (270, 2), (178, 1), (335, 2))  # i386
_KILLS_ARM = ((37, 1), (238, 1), (268, 2), (178, 1), (363, 2))
_KILLS_GENERIC = ((129, 1), (130, 1), (131, 2), (138, 1), (240, 2))  # aarch64, riscv64
_KILLS_PPC = ((37, 1), (208, 1), (250, 2), (177, 1), (322, 2))
SECCOMP_ARCHES = {
    "x86_64": ((0xC000003E, _X32_OFF, 56, 435, 16, _KILLS_X86_64, (72,)),  # x86_64 (and x32)
               (0x40000003, 0, 120, 435, 16, _KILLS_32, (55, 221))),  # i386
    "aarch64": ((0xC00000B7, 0, 220, 435, 16, _KILLS_GENERIC, (25,)),
                (0x40000028, 0, 120, 435, 16, _KILLS_ARM, (55, 221))),  # arm
    "riscv64": ((0xC00000F3, 0, 220, 435, 16, _KILLS_GENERIC, (25,)),),
    "ppc64le": ((0xC0000015, 0, 120, 435, 16, _KILLS_PPC, (55,)),),
}
PIDFD_SEND_SIGNAL = 424  # the same number everywhere
STOP_SIGNALS = (19, 22)  # SIGSTOP .. SIGTTOU
F_SETSIG = 10
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000


def _arg(i: int) -> int:
    """The offset of the low 32 bits of syscall argument `i` in struct seccomp_data (little-endian)."""
    return 16 + 8 * i


def _resolve(block: list[Any]) -> list[tuple[int, int, int, int]]:
    """Instructions whose jump targets may be labels (strings in the list mark them) -> relative offsets."""
    at: dict[str, int] = {}
    insns: list[tuple[Any, ...]] = []
    for item in block:
        if isinstance(item, str):
            at[item] = len(insns)
        else:
            insns.append(item)
    out: list[tuple[int, int, int, int]] = []
    for pc, (code, jt, jf, k) in enumerate(insns):
        jt, jf = (at[t] - pc - 1 if isinstance(t, str) else t for t in (jt, jf))
        k = at[k] - pc - 1 if isinstance(k, str) else k
        assert 0 <= jt <= 255 and 0 <= jf <= 255 and k >= 0
        out.append((code, jt, jf, k))
    return out


def clone_filter(machine: str, protect: tuple[int, ...] = ()) -> list[tuple[int, int, int, int]]:
    """The BPF program (code, jt, jf, k) for `machine` (os.uname().machine); KeyError when it is not known.
    `protect`: the targets (pids, negated process groups, -1) that no stop signal may be sent to."""
    ld, jeq, jge, jgt, jset, ja, alu_and, ret = 0x20, 0x15, 0x35, 0x25, 0x45, 0x05, 0x54, 0x06
    first_stop, last_stop = STOP_SIGNALS
    prog: list[tuple[int, int, int, int]] = [(ld, 0, 0, 4)]  # A = arch
    for arch, mask, clone, clone3, flags, kills, fcntls in SECCOMP_ARCHES[machine]:
        block: list[Any] = [(ld, 0, 0, 0)] + ([(alu_and, 0, 0, mask)] if mask else []) + [  # A = nr
            (jeq, "enosys", 0, clone3),
            (jeq, 0, "kills", clone),
            (ld, 0, 0, flags),
            (jset, "eperm", "allow", CLONE_UNTRACED),
            "kills",
        ]
        for i, (nr, sig) in enumerate(kills):  # a stop signal: to whom?
            block += [(jeq, 0, f"k{i}", nr), (ld, 0, 0, _arg(sig)), (jge, 0, "allow", first_stop),
                      (jgt, "allow", 0, last_stop), (ld, 0, 0, _arg(0)), (ja, 0, 0, "targets"), f"k{i}"]
        block += [(jeq, 0, "fcntl", PIDFD_SEND_SIGNAL), (ld, 0, 0, _arg(1)), (jge, 0, "allow", first_stop),
                  (jgt, "allow", "eperm", last_stop), "fcntl"]
        for i, nr in enumerate(fcntls):
            block += [(jeq, 0, f"f{i}", nr), (ld, 0, 0, _arg(1)), (jeq, 0, "allow", F_SETSIG), (ld, 0, 0, _arg(2)),
                      (jge, 0, "allow", first_stop), (jgt, "allow", "eperm", last_stop), f"f{i}"]
        block += [(ja, 0, 0, "allow"), "targets"]
        block += [(jeq, "eperm", 0, target & 0xFFFFFFFF) for target in dict.fromkeys(protect)]
        block += ["allow", (ret, 0, 0, _RET_ALLOW), "eperm", (ret, 0, 0, _RET_ERRNO | errno.EPERM),
                  "enosys", (ret, 0, 0, _RET_ERRNO | errno.ENOSYS)]
        code = _resolve(block)
        prog.append((jeq, 0, len(code), arch))
        prog += code
    prog.append((ret, 0, 0, _RET_KILL_PROCESS))  # an ABI the filter does not know
    return prog


def _protected() -> tuple[int, ...]:
    """This process and the processes of the same user above it (sshd's, which holds the channel), by pid and by
    process group, and -1: what the session may not stop."""
    out = [-1]
    pid, uid = os.getpid(), os.getuid()
    for _ in range(MAX_CHAIN):
        if pid <= 1:
            break
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                fields = dict(line.split(b":", 1) for line in f if b":" in line)
            if int(fields[b"Uid"].split()[0]) != uid:
                break
            out += [pid, -os.getpgid(pid)]
            pid = int(fields[b"PPid"])
        except (OSError, KeyError, ValueError, IndexError):
            break
    return tuple(dict.fromkeys(out))


def _install_clone_filter() -> None:
    """No new privileges (a traced process gets none anyway), then the filter, for this process and its children."""
    prog = clone_filter(os.uname().machine, _protected())
    filters = (ctypes.c_ubyte * (8 * len(prog))).from_buffer_copy(b"".join(struct.pack("=HBBI", *i) for i in prog))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog), ctypes.addressof(filters))
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog))


# ---------------------------------------------------------------------------------------------------------------
# what the guard knows about programs

SYSTEM_DIRS = (
    "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/libexec", "/usr/lib/git-core",
)
TRUSTED_PREFIXES = ("/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/", "/lib32/", "/opt/")
MAX_COPY_SIZE = 256 << 20
MAX_CHAIN = 8
MAX_SCRIPT_ARGS = 4  # the first arguments checked for a system file an interpreter would run (its script)
MAX_CACHE = 4096
START_TIMEOUT = 30.0
DRAIN_TIME = 0.5
READ_SIZE = 65536
GROUP_STOP_SIGNALS = (signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)
# the signal names of the SSH protocol (RFC 4254 6.10), for K frames
SIGNALS = {
    name: getattr(signal, "SIG" + name)
    for name in ("ABRT", "ALRM", "FPE", "HUP", "ILL", "INT", "KILL", "PIPE", "QUIT", "SEGV", "TERM", "USR1", "USR2")
}
_SESSION_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def is_trusted(exe: str, st: os.stat_result) -> bool:
    """A file the session's user cannot have changed: root's (or, for a session that is not root, another user's:
    in a user namespace root's files show as the overflow uid), not group/world-writable, in a system tree."""
    return (
        (st.st_uid == 0 or st.st_uid != os.getuid())
        and not st.st_mode & 0o022
        and exe.startswith(TRUSTED_PREFIXES)
        and " (deleted)" not in exe
    )


class ProgramIndex:
    """The system program directories: every name of each file (aliases: by path through symlinks, and by inode,
    which hard links share) and the trusted files by size."""

    def __init__(self, dirs: tuple[str, ...] = SYSTEM_DIRS) -> None:
        self.aliases: dict[str, set[str]] = {}
        self.inode_names: dict[tuple[int, int], set[str]] = {}
        self.by_size: dict[int, list[str]] = {}
        seen: set[str] = set()
        for directory in dirs:
            try:
                real_dir = os.path.realpath(directory)
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                try:
                    real = os.path.realpath(entry.path) if entry.is_symlink() else os.path.join(real_dir, entry.name)
                    st = os.stat(real)
                except OSError:
                    continue
                self.aliases.setdefault(real, set()).add(entry.name)
                if not stat.S_ISREG(st.st_mode):
                    continue
                self.inode_names.setdefault((st.st_dev, st.st_ino), set()).add(entry.name)
                if real in seen:
                    continue
                seen.add(real)
                if st.st_uid == 0 and not st.st_mode & 0o022 and st.st_size > 0:
                    self.by_size.setdefault(st.st_size, []).append(real)

    def names_of(self, st: os.stat_result) -> set[str]:
        """Every name of the file `st` in the system program directories (perl and perl5.36.0 are one file)."""
        return self.inode_names.get((st.st_dev, st.st_ino), set())

    def copy_of(self, image: str, size: int) -> str | None:
        """The first trusted system file with the same bytes as `image` (a path such as /proc/PID/exe)."""
        if size <= 0 or size > MAX_COPY_SIZE:
            return None
        for candidate in self.by_size.get(size, ()):
            if _same_bytes(image, candidate):
                return candidate
        return None


def _fixed_dirs(path: str) -> bool:
    """Every directory on the way to `path` is one the session's user cannot rename entries in or out of (owned as
    :func:`is_trusted` wants a file, not group/world-writable): the name resolves to the same file later."""
    directory = os.path.dirname(path)
    while True:
        try:
            st = os.stat(directory)
        except OSError:
            return False
        if not (st.st_uid == 0 or st.st_uid != os.getuid()) or st.st_mode & 0o022:
            return False
        if directory == "/":
            return True
        directory = os.path.dirname(directory)


def trusted_file(path: str) -> bool:
    """`path` (absolute, as an interpreter will open it) names a trusted system file through directories the
    session's user cannot change, so that the file judged is the file the interpreter reads, later, by that path."""
    if not path.startswith(TRUSTED_PREFIXES) or "\0" in path or "/../" in path:
        return False
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except (OSError, ValueError):
        return False
    return stat.S_ISREG(st.st_mode) and is_trusted(real, st) and _fixed_dirs(path) and _fixed_dirs(real)


def trusted_args(argv: list[str]) -> list[int]:
    """The indexes of the first few arguments that are trusted system files: what the daemon needs to tell a
    system script run by its interpreter (``/usr/bin/python3 -Es /usr/bin/lsb_release``) from code of the
    operator's (``python3 ./x.py``)."""
    return [i for i in range(1, min(len(argv), 1 + MAX_SCRIPT_ARGS))
            if argv[i].startswith("/") and trusted_file(argv[i])]


def _env_names(pid: int, base: frozenset[bytes]) -> list[str]:
    """The names (never the values: they may be secrets) of the variables the session set or changed in the new
    image's environment (`base`: what its first program was given); the daemon refuses what a loader variable
    (``LD_PRELOAD``) or an interpreter's code path (``PYTHONPATH``) would make a program run."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        raw = f.read()
    return sorted({_decode(e.split(b"=", 1)[0]) for e in raw.split(b"\0") if e and e not in base})


def _same_file(path: str, st: os.stat_result) -> bool:
    """`path`, as the guard sees it, is the file `st`: a process in another mount namespace may show a system path
    for another file (a bind mount of /usr/bin/rm on /usr/bin/ls: its exe reads /usr/bin/ls)."""
    try:
        here = os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (st.st_dev, st.st_ino)


def _same_bytes(a: str, b: str) -> bool:
    try:
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while True:
                chunk_a = fa.read(1 << 20)
                chunk_b = fb.read(1 << 20)
                if chunk_a != chunk_b:
                    return False
                if not chunk_a:
                    return True
    except OSError:
        return False


def _program_name(path: str) -> str:
    return os.path.basename(path)


class _Proc:
    """A traced task: the basename of its program and the program names of its ancestors (nearest first)."""

    __slots__ = ("name", "ancestry")

    def __init__(self, name: str, ancestry: tuple[str, ...]) -> None:
        self.name = name
        self.ancestry = ancestry

    def child(self) -> _Proc:
        return _Proc(self.name, ((self.name,) + self.ancestry)[:MAX_CHAIN])


def _proc_status(pid: int) -> tuple[int, int]:
    """(Tgid, PPid) of a task, from /proc."""
    tgid = ppid = 0
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"Tgid:"):
                tgid = int(line.split()[1])
            elif line.startswith(b"PPid:"):
                ppid = int(line.split()[1])
    return tgid, ppid


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------------------------------------------
# the guard


class _Exit(Exception):
    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code = code


class _ChannelGone(Exception):
    """fd 1 cannot be written any more: the SSH channel is closed."""


class _Terminated(BaseException):
    """SIGTERM, SIGHUP or SIGINT: the guard ends, and with it (EXITKILL) the session."""


def _log(text: str) -> None:
    try:
        os.write(2, f"bastion-guard[{os.getpid()}]: {text}\n".encode("utf-8", "backslashreplace"))
    except OSError:
        pass


def _on_sigchld(signum: int, frame: object) -> None:
    pass  # the wakeup fd does the work


def _on_terminate(signum: int, frame: object) -> None:
    raise _Terminated(signum)


class Start:
    """The S frame."""

    def __init__(self, obj: object) -> None:
        if not isinstance(obj, dict):
            raise ValueError("the start frame is not a JSON object")
        command = obj.get("command")
        term = obj.get("term")
        env = obj.get("env") or {}
        cols = obj.get("cols", 80)
        rows = obj.get("rows", 24)
        if obj.get("v", 1) != 1:
            raise ValueError(f"unsupported start frame version {obj.get('v')!r}")
        if command is not None and not isinstance(command, str):
            raise ValueError("command must be a string or null")
        if term is not None and not isinstance(term, str):
            raise ValueError("term must be a string or null")
        if command is None and not term:
            raise ValueError("a login shell (command null) needs a terminal (term)")
        for value in (cols, rows):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFF:
                raise ValueError("cols and rows must be integers from 0 to 65535")
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and k and "=" not in k and "\0" not in k + v
            for k, v in env.items()
        ):
            raise ValueError("env must map names to strings")
        if command is not None and "\0" in command:
            raise ValueError("command contains NUL")
        self.session = obj.get("session")
        self.command: str | None = command
        self.term: str | None = term
        self.cols: int = cols
        self.rows: int = rows
        self.env: dict[str, str] = dict(env)


class Guard:
    def __init__(self, session: str) -> None:
        self.session = session
        self.reader = FrameReader()
        self.wake_r = -1
        self.pty = False
        self.master = -1
        self.stdin_w = -1
        self.outputs: dict[int, str] = {}  # fd -> frame type (O or R)
        self.inbuf = bytearray()
        self.input_end = False
        self.root = 0
        self.root_execed = False
        self.root_status: tuple[int | None, int | None] | None = None
        self.procs: dict[int, _Proc] = {}
        self.pending: dict[int, tuple[int, tuple[object, ...]]] = {}  # exec id -> (pid, cache key)
        self.pending_of: dict[int, int] = {}  # pid -> exec id
        self.cache: set[tuple[object, ...]] = set()
        self.next_id = 0
        self.index: ProgramIndex | None = None
        self.parent_comm = ""
        self.base_env: frozenset[bytes] = frozenset()

    # -- the channel ------------------------------------------------------------------------------------------

    def send(self, kind: str, payload: bytes = b"") -> None:
        self._write(encode(kind, payload))

    def send_json(self, kind: str, obj: object) -> None:
        self._write(encode_json(kind, obj))

    def notice(self, text: str) -> None:
        self.send_json("N", {"text": text})

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(1, view)
            except BlockingIOError:
                select.select([], [1], [])
                continue
            except OSError as e:
                raise _ChannelGone(str(e)) from None
            view = view[n:]

    def _read_channel(self) -> list[tuple[str, bytes]]:
        data = os.read(0, READ_SIZE)
        if not data:
            raise _Exit(255, "the channel was closed (EOF on stdin)")
        return self.reader.feed(data)

    # -- start ------------------------------------------------------------------------------------------------

    def run(self) -> int:
        saved = self._setup_signals()
        try:
            self.send_json("H", {"v": 1, "guard": VERSION, "pid": os.getpid(), "mechanism": "ptrace"})
            start, backlog = self._await_start()
            try:
                with open(f"/proc/{os.getppid()}/comm", "rb") as f:
                    self.parent_comm = _decode(f.read().strip())
            except OSError:
                self.parent_comm = "?"
            self._spawn(start)
            for kind, payload in backlog:
                self._on_frame(kind, payload)
            return self._loop()
        finally:
            signal.set_wakeup_fd(-1)
            for signum, handler in saved.items():
                signal.signal(signum, handler)

    def _setup_signals(self) -> dict[int, Any]:
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        handlers: dict[int, Any] = {
            signal.SIGPIPE: signal.SIG_IGN, signal.SIGCHLD: _on_sigchld,
            signal.SIGTERM: _on_terminate, signal.SIGHUP: _on_terminate, signal.SIGINT: _on_terminate,
        }
        saved = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        return saved

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except OSError:
            pass

    def _await_start(self) -> tuple[Start, list[tuple[str, bytes]]]:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Exit(255, f"no start frame within {START_TIMEOUT:.0f} s")
            ready, _, _ = select.select([0, self.wake_r], [], [], left)
            if self.wake_r in ready:
                self._drain_wakeups()
            if 0 not in ready:
                continue
            frames = self._read_channel()
            for i, (kind, payload) in enumerate(frames):
                if kind == "S":
                    try:
                        start = Start(json.loads(payload))
                        if start.session is not None and start.session != self.session:
                            raise ValueError(f"the start frame is for session {start.session!r}")
                    except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
                        self.notice(f"guard: bad start frame: {e}")
                        raise _Exit(2, f"bad start frame: {e}") from None
                    return start, frames[i + 1 :]
                if kind not in "IEWKVC":
                    raise _Exit(255, f"protocol error: unknown frame type {kind!r}")
                # anything else before the start has nothing to act on

    def _spawn(self, start: Start) -> None:
        try:
            entry: pwd.struct_passwd | None = pwd.getpwuid(os.getuid())
        except KeyError:
            entry = None
        shell = _login_shell(entry)
        env = dict(os.environ)
        if start.term:
            env["TERM"] = start.term  # as sshd sets it for a pty; the start frame's env may still say otherwise
        env.update(start.env)
        self.base_env = frozenset(os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items())
        cwd: str | None = None
        if start.command is None:
            argv = ["-" + os.path.basename(shell)]
            cwd = env.get("HOME") or (entry.pw_dir if entry else "") or "/"
        else:
            argv = [shell, "-c", start.command]
        try:
            _install_clone_filter()
        except KeyError:
            self._refuse(0, f"no clone filter for the {os.uname().machine} architecture")
        except OSError as e:
            self._refuse(0, f"cannot install the clone filter (seccomp): {e.strerror}")
        go_r, go_w = os.pipe()
        if start.term is not None:
            self.pty = True
            master, slave = os.openpty()
            self._set_winsize(master, start.cols, start.rows)
            child_fds = (slave, slave, slave)
            closes = [slave]
        else:
            in_r, in_w = os.pipe()
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            child_fds = (in_r, out_w, err_w)
            closes = [in_r, out_w, err_w]
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child execs or exits
            _child(shell, argv, env, cwd, child_fds, self.pty, go_r)
            os._exit(127)
        os.close(go_r)
        for fd in closes:
            os.close(fd)
        if self.pty:
            self.master = master
            os.set_blocking(master, False)
            self.outputs[master] = "O"
        else:
            self.stdin_w = in_w
            for fd, kind in ((in_w, ""), (out_r, "O"), (err_r, "R")):
                os.set_blocking(fd, False)
                if kind:
                    self.outputs[fd] = kind
        self.root = pid
        self.procs[pid] = _Proc("", ())
        try:
            _ptrace(PTRACE_SEIZE, pid, 0, TRACE_OPTIONS)
        except OSError as e:
            reason = f"ptrace is not permitted: {e.strerror}"
            try:
                with open("/proc/sys/kernel/yama/ptrace_scope") as f:
                    reason += f" (kernel.yama.ptrace_scope = {f.read().strip()})"
            except OSError:
                pass
            self._refuse(pid, reason)
        try:
            _set_not_dumpable()
        except OSError as e:
            self._refuse(pid, f"cannot make the guard non-dumpable: {e.strerror}")
        os.write(go_w, b"g")
        os.close(go_w)

    def _refuse(self, pid: int, reason: str) -> None:
        """Fail closed: the session does not run unsupervised."""
        _log(reason + "; the session is refused")
        self.notice(f"guard: {reason}; the session is refused")
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        self.send_json("Q", {"status": 126, "signal": None})
        raise _Exit(126)

    @staticmethod
    def _set_winsize(fd: int, cols: int, rows: int) -> None:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    # -- the loop ---------------------------------------------------------------------------------------------

    def _input_fd(self) -> int:
        return self.master if self.pty else self.stdin_w

    def _loop(self) -> int:
        while self.root_status is None:
            want_write = [self._input_fd()] if self.inbuf and self._input_fd() >= 0 else []
            readable, writable, _ = select.select([0, self.wake_r, *self.outputs], want_write, [], 1.0)
            if self.wake_r in readable:
                self._drain_wakeups()
            self._reap()
            for fd in readable:
                if fd in self.outputs:
                    self._read_output(fd)
            if writable:
                self._flush_input()
            if 0 in readable:
                for kind, payload in self._read_channel():
                    self._on_frame(kind, payload)
            self._reap()
        return self._finish()

    def _finish(self) -> int:
        # what the session wrote before its end; a background process holding the pty or pipes open is not waited
        deadline = time.monotonic() + DRAIN_TIME
        while self.outputs:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            readable, _, _ = select.select(list(self.outputs), [], [], left)
            for fd in readable:
                self._read_output(fd)
        assert self.root_status is not None
        status, signum = self.root_status
        self.send_json("Q", {"status": status, "signal": signum})
        return 128 + signum if signum is not None else (status or 0)

    def _read_output(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:  # EIO from a pty master: no slave side is left
            data = b""
        if not data:
            del self.outputs[fd]
            if fd != self.master:
                os.close(fd)
            return
        self.send(self.outputs[fd], data)

    def _flush_input(self) -> None:
        fd = self._input_fd()
        if fd < 0:
            self.inbuf.clear()
            return
        if self.inbuf:
            try:
                n = os.write(fd, self.inbuf[:READ_SIZE])
            except BlockingIOError:
                return
            except OSError:  # the command closed its stdin (EPIPE), or the pty is gone
                self.inbuf.clear()
                if not self.pty:
                    self._close_stdin()
                return
            del self.inbuf[:n]
        if not self.inbuf and self.input_end and not self.pty:
            self._close_stdin()

    def _close_stdin(self) -> None:
        if self.stdin_w >= 0:
            os.close(self.stdin_w)
            self.stdin_w = -1

    # -- frames from the daemon -------------------------------------------------------------------------------

    def _on_frame(self, kind: str, payload: bytes) -> None:
        if kind == "I":
            if self._input_fd() >= 0:
                self.inbuf += payload
                self._flush_input()
        elif kind == "E":
            self.input_end = True
            self._flush_input()
        elif kind == "V":
            obj = _json_object(payload, kind)
            exec_id, allow, cache = obj.get("id"), obj.get("allow"), obj.get("cache", False)
            if not isinstance(exec_id, int) or not isinstance(allow, bool) or not isinstance(cache, bool):
                raise _Exit(255, f"protocol error: bad verdict {obj!r}")
            self._verdict(exec_id, allow, cache)
        elif kind == "W":
            obj = _json_object(payload, kind)
            cols, rows = obj.get("cols"), obj.get("rows")
            if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 0xFFFF for v in (cols, rows)):
                raise _Exit(255, f"protocol error: bad window size {obj!r}")
            if self.pty:
                assert isinstance(cols, int) and isinstance(rows, int)
                try:
                    self._set_winsize(self.master, cols, rows)
                except OSError:
                    pass
        elif kind == "K":
            obj = _json_object(payload, kind)
            signum = SIGNALS.get(str(obj.get("signal")))
            if signum is not None:
                self._signal_session(signum)
        elif kind == "C":
            self.cache.clear()
        else:  # a second S, or a type this guard does not know
            raise _Exit(255, f"protocol error: unexpected frame type {kind!r}")

    def _signal_session(self, signum: int) -> None:
        try:
            pgid = os.tcgetpgrp(self.master) if self.pty else self.root
            if pgid > 0:
                os.killpg(pgid, signum)
        except OSError:
            pass

    def _verdict(self, exec_id: int, allow: bool, cache: bool) -> None:
        held = self.pending.pop(exec_id, None)
        if held is None:
            return  # it ended meanwhile, or an id this guard never sent
        pid, key = held
        self.pending_of.pop(pid, None)
        if allow:
            if cache:
                if len(self.cache) >= MAX_CACHE:
                    self.cache.clear()
                self.cache.add(key)
            self._cont(pid, 0)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    # -- the traced tree --------------------------------------------------------------------------------------

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG | WALL)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._on_status(pid, status)

    def _on_status(self, pid: int, status: int) -> None:
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            self._forget(pid)
            if pid == self.root:
                if os.WIFEXITED(status):
                    self.root_status = (os.WEXITSTATUS(status), None)
                else:
                    self.root_status = (None, os.WTERMSIG(status))
            return
        if not os.WIFSTOPPED(status):
            return
        signum = os.WSTOPSIG(status)
        event = (status >> 16) & 0xFF
        if pid not in self.procs:
            self._learn(pid)
        if event == PTRACE_EVENT_EXEC:
            self._on_exec(pid)
        elif event in (PTRACE_EVENT_FORK, PTRACE_EVENT_VFORK, PTRACE_EVENT_CLONE):
            self._on_fork(pid)
        elif event == PTRACE_EVENT_STOP:
            if signum in GROUP_STOP_SIGNALS:  # job control: stays stopped, as without the guard, until SIGCONT
                self._restart(PTRACE_LISTEN, pid, 0)
            else:  # a new task's first stop, or the end of a group-stop
                self._cont(pid, 0)
        elif event == 0:  # signal-delivery-stop: the signal goes on unchanged
            self._cont(pid, signum)
        else:
            self._cont(pid, 0)

    def _cont(self, pid: int, signum: int) -> None:
        self._restart(PTRACE_CONT, pid, signum)

    def _restart(self, request: int, pid: int, signum: int) -> None:
        try:
            _ptrace(request, pid, 0, signum)
        except OSError as e:
            self._ptrace_failed(pid, request, e)

    def _ptrace_failed(self, pid: int, request: int, e: OSError) -> None:
        if e.errno == errno.ESRCH:
            self._forget(pid)
        else:
            self.notice(f"guard: ptrace request 0x{request:x} on pid {pid} failed: {e.strerror}")

    def _forget(self, pid: int) -> None:
        self.procs.pop(pid, None)
        exec_id = self.pending_of.pop(pid, None)
        if exec_id is not None:
            self.pending.pop(exec_id, None)

    def _learn(self, pid: int) -> None:
        """A task seen before its creator's fork event: its place in the tree from /proc."""
        try:
            tgid, ppid = _proc_status(pid)
        except (OSError, ValueError, IndexError):
            tgid = ppid = 0
        if tgid and tgid != pid and tgid in self.procs:  # a thread
            self.procs[pid] = _Proc(self.procs[tgid].name, self.procs[tgid].ancestry)
        elif ppid in self.procs:
            self.procs[pid] = self.procs[ppid].child()
        else:
            try:
                name = _program_name(_decode(os.readlink(f"/proc/{pid}/exe".encode())))
            except OSError:
                name = "?"
            self.procs[pid] = _Proc(name, ())

    def _on_fork(self, pid: int) -> None:
        try:
            new = _event_msg(pid)
        except OSError as e:
            self._ptrace_failed(pid, PTRACE_GETEVENTMSG, e)
            return
        parent = self.procs[pid]
        if new and new not in self.procs:
            try:
                tgid, _ = _proc_status(new)
            except (OSError, ValueError, IndexError):
                tgid = new
            if tgid != new:  # a thread of the same process
                self.procs[new] = _Proc(parent.name, parent.ancestry)
            else:
                self.procs[new] = parent.child()
        self._cont(pid, 0)

    def _on_exec(self, pid: int) -> None:
        try:
            former = _event_msg(pid)
        except OSError as e:
            self._ptrace_failed(pid, PTRACE_GETEVENTMSG, e)
            return
        if former and former != pid:  # a non-leader thread exec'd and took the leader's id
            self.procs.pop(former, None)
        proc = self.procs[pid]
        try:
            exe = _decode(os.readlink(f"/proc/{pid}/exe".encode()))
            st = os.stat(f"/proc/{pid}/exe")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                raw = f.read()
            cwd = _decode(os.readlink(f"/proc/{pid}/cwd".encode()))
            env = _env_names(pid, self.base_env)
        except OSError as e:  # it vanished; if it did not, it does not run unjudged
            self._kill_unjudged(pid, f"cannot read /proc/{pid}: {e.strerror}")
            return
        parts = raw.split(b"\0")
        if parts and parts[-1] == b"":
            parts.pop()
        argv = [_decode(a) for a in parts]
        first = pid == self.root and not self.root_execed
        if pid == self.root:
            self.root_execed = True
        names, trusted, copy_of = self._identify(pid, exe, st, argv)
        scripts = trusted_args(argv)
        chain = list(proc.ancestry) + [self.parent_comm]
        proc.name = _program_name(exe)
        # the file as it is now (ctime: a copy rewritten in place, even with its mtime set back, is another
        # program), under the name it ran by, with this argv, in this directory, with these environment names
        key: tuple[object, ...] = (exe, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, tuple(argv),
                                   cwd, tuple(env), tuple(scripts))
        cached = key in self.cache
        self.next_id += 1
        exec_id = self.next_id
        report = {
            "id": exec_id, "pid": pid, "exe": exe, "argv": argv, "cwd": cwd, "chain": chain, "names": names,
            "trusted": trusted, "copy_of": copy_of, "first": first, "cached": cached, "env": env,
            "trusted_args": scripts,
        }
        try:
            frame = encode_json("X", report)
        except ValueError:
            self._kill_unjudged(pid, f"exec of {exe} by pid {pid}: its report exceeds the frame limit")
            return
        self._write(frame)
        if cached:
            self._cont(pid, 0)
        else:
            self.pending[exec_id] = (pid, key)
            self.pending_of[pid] = exec_id

    def _kill_unjudged(self, pid: int, reason: str) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass  # gone already: nothing to say
        else:
            self.notice(f"guard: {reason}; killed")
        self._forget(pid)

    def _identify(self, pid: int, exe: str, st: os.stat_result, argv: list[str]) -> tuple[list[str], bool, str | None]:
        if self.index is None:
            self.index = ProgramIndex()
        trusted = is_trusted(exe, st) and _same_file(exe, st)
        names = {_program_name(exe)}
        if argv:
            names.add(_program_name(argv[0]).lstrip("-"))  # a login shell's -bash is bash
        names |= self.index.aliases.get(exe, set())
        names |= self.index.names_of(st)
        copy_of = None
        if not trusted:
            copy_of = self.index.copy_of(f"/proc/{pid}/exe", st.st_size)
            if copy_of is not None:
                names.add(_program_name(copy_of))
                names |= self.index.aliases.get(copy_of, set())
                try:
                    names |= self.index.names_of(os.stat(copy_of))
                except OSError:
                    pass
        names.discard("")
        return sorted(names), trusted, copy_of


def _json_object(payload: bytes, kind: str) -> dict[str, object]:
    try:
        obj = json.loads(payload)
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        raise _Exit(255, f"protocol error: the {kind} frame is not a JSON object")
    return obj


def _child(
    shell: str, argv: list[str], env: dict[str, str], cwd: str | None, fds: tuple[int, int, int], pty: bool, go_r: int
) -> NoReturn:  # pragma: no cover - runs in the forked child
    """Between fork and exec: the session's fds, nothing else inherited, then wait for the tracer's go."""
    try:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)  # as sshd leaves them (Python ignores SIGPIPE and SIGXFSZ)
        os.setsid()
        if pty:
            fcntl.ioctl(fds[0], termios.TIOCSCTTY, 0)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        try:
            open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
        except OSError:
            open_fds = list(range(3, 1024))
        for fd in open_fds:
            if fd > 2 and fd != go_r:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if os.read(go_r, 1) != b"g":  # the guard died before it could trace this process
            os._exit(126)
        os.close(go_r)
        if cwd is not None:
            try:
                os.chdir(cwd)
            except OSError:
                os.chdir("/")
        os.execve(shell, argv, env)  # noqa: S606 - the user's shell, as sshd runs it
    except BaseException as e:
        try:
            os.write(2, f"bastion-guard: cannot start {shell}: {e}\n".encode("utf-8", "backslashreplace"))
        finally:
            os._exit(127)


def _usable_std_fds() -> None:
    """fds 0-2 open, so that no pipe of the session takes one of their numbers."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def _login_shell(entry: pwd.struct_passwd | None) -> str:
    """The session's shell: $SHELL as sshd (or the host's session launcher) set it, else the account's, else sh. A
    sandbox may run the session as an account whose passwd shell is nologin while giving it a real $SHELL."""
    env_shell = os.environ.get("SHELL", "")
    if env_shell.startswith("/") and os.access(env_shell, os.X_OK) and not env_shell.endswith("nologin"):
        return env_shell
    return entry.pw_shell if entry and entry.pw_shell else "/bin/sh"


def check() -> int:
    """``--check``: run ``true`` under a real guard (this file, in a child process) and answer its exec reports, so
    an installer learns on the target whether ptrace and the seccomp filter work there (exit 0) or why not (1)."""
    import subprocess  # only here: the guard itself needs none of it

    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--session", "check"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(encode_json("S", {"v": 1, "session": "check", "command": "exec true", "term": None,
                                       "cols": 80, "rows": 24, "env": {}}))
    proc.stdin.flush()
    reader, execs, notices, status = FrameReader(), 0, [], None
    deadline = time.monotonic() + 30
    while status is None and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        data = os.read(proc.stdout.fileno(), READ_SIZE) if ready else b"."
        if not data:
            break
        for kind, payload in (reader.feed(data) if data != b"." else []):
            obj = json.loads(payload) if kind in "XNQ" else {}
            if kind == "X" and not obj.get("cached"):
                execs += 1
                proc.stdin.write(encode_json("V", {"id": obj["id"], "allow": True, "cache": False}))
                proc.stdin.flush()
            elif kind == "N":
                notices.append(str(obj.get("text", "")))
            elif kind == "Q":
                status = obj.get("status")
    proc.kill()
    _, err = proc.communicate()
    if status == 0 and execs >= 1:
        print(f"bastion-guard {VERSION}: supervision works here ({execs} exec(s) judged; Python "
              f"{sys.version.split()[0]}, kernel {os.uname().release}, uid {os.getuid()})")
        return 0
    why = "; ".join(notices) or err.decode("utf-8", "replace").strip() or f"status {status}"
    print(f"bastion-guard {VERSION}: sessions cannot be supervised here: {why}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--check"]:
        return check()
    if len(args) != 2 or args[0] != "--session" or not _SESSION_ID.fullmatch(args[1]):
        _log("usage: bastion-guard --session ID   (ID: 1 to 64 characters of A-Z a-z 0-9 . _ -)\n"
             "       bastion-guard --check        (can sessions be supervised on this host?)")
        return 2
    _usable_std_fds()
    try:
        return Guard(args[1]).run()
    except _Exit as e:
        if str(e):
            _log(str(e))
        return e.code
    except FrameError as e:
        _log(f"protocol error: {e}")
        return 255
    except _ChannelGone as e:
        _log(f"the channel is gone: {e}")
        return 255
    except _Terminated as e:
        _log(f"terminated by signal {e.args[0] if e.args else '?'}")
        return 255
    except Exception:
        _log("internal error:\n" + traceback.format_exc())
        return 255


if __name__ == "__main__":
    sys.exit(main())
