"""bastion-guard (guard/agent.py, docs/guard.md): the frame codec, and the guard itself run as a real process that
traces real sessions with ptrace. Nothing is mocked: every test starts `python guard/agent.py --session t1`, speaks
the protocol on its stdin/stdout and answers its exec reports with a policy.

Where ptrace is not permitted the guard refuses every session (fail closed), and these tests fail: they do not skip.
"""

from __future__ import annotations

import ast
import json
import os
import pwd
import select
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from guard.agent import (
    MAX_FRAME,
    SECCOMP_ARCHES,
    FrameError,
    FrameReader,
    ProgramIndex,
    _protected,
    clone_filter,
    encode,
    encode_json,
)

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "guard" / "agent.py"
WAIT = 20.0  # generous: the CI machine is a loaded 2-core VM
OWN_COMM = Path("/proc/self/comm").read_text().strip()  # the guard's parent, last in every chain
SHELL = pwd.getpwuid(os.getuid()).pw_shell or "/bin/sh"

Policy = Callable[[dict], "bool | None"]  # an exec report -> allow, deny, or None: hold it (the test answers)


def allow_all(x: dict) -> bool | None:
    return True


def deny_rm(x: dict) -> bool | None:
    return "rm" not in x["names"]


class GuardRun:
    """One guard process: sends frames, collects what comes back, answers exec reports with `policy`."""

    def __init__(self, cwd: Path, policy: Policy = allow_all, cache: bool = False,
                 args: tuple[str, ...] = ("--session", "t1"), python: tuple[str, ...] = (sys.executable,),
                 refusal_expected: bool = False) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), "LANG": "C", "USER": "tester",
               "SHELL": SHELL}
        self.proc = subprocess.Popen([*python, str(AGENT), *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env)
        self.refusal_expected = refusal_expected
        self.notices: list[str] = []
        self.policy = policy
        self.cache = cache
        self.reader = FrameReader()
        self.frames: list[tuple[str, bytes]] = []
        self.out = bytearray()
        self.err = bytearray()
        self.stderr = bytearray()
        self.execs: list[dict] = []
        self.held: list[dict] = []
        self.verdicts: list[dict] = []
        self.quit: dict | None = None
        self.hello: dict | None = None
        self.eof = False

    # -- talking ----------------------------------------------------------------------------------------------

    def start(self, command: str | None, term: str | None = None, cols: int = 80, rows: int = 24,
              env: dict[str, str] | None = None) -> GuardRun:
        self.send_json("S", {"v": 1, "session": "t1", "command": command, "term": term, "cols": cols,
                             "rows": rows, "env": env or {}})
        return self

    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, kind: str, payload: bytes = b"") -> None:
        self.send_raw(encode(kind, payload))

    def send_json(self, kind: str, obj: object) -> None:
        self.send_raw(encode_json(kind, obj))

    def verdict(self, x: dict, allow: bool, cache: bool = False) -> None:
        v = {"id": x["id"], "allow": allow, "cache": cache}
        self.verdicts.append(v)
        self.send_json("V", v)

    # -- listening --------------------------------------------------------------------------------------------

    def pump(self, timeout: float) -> None:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        fds = [f for f in (self.proc.stdout, self.proc.stderr) if not (f is self.proc.stdout and self.eof)]
        ready, _, _ = select.select(fds, [], [], timeout)
        for f in ready:
            data = os.read(f.fileno(), 65536)
            if f is self.proc.stderr:
                self.stderr += data
            elif not data:
                self.eof = True
            else:
                for kind, payload in self.reader.feed(data):
                    self._on_frame(kind, payload)

    def _on_frame(self, kind: str, payload: bytes) -> None:
        self.frames.append((kind, payload))
        if kind == "H":
            self.hello = json.loads(payload)
        elif kind == "O":
            self.out += payload
        elif kind == "R":
            self.err += payload
        elif kind == "Q":
            self.quit = json.loads(payload)
        elif kind == "N":
            text = json.loads(payload)["text"]
            self.notices.append(text)
            if "ptrace is not permitted" in text and not self.refusal_expected:
                pytest.fail(f"the guard cannot trace here, so it refuses every session: {text}")
        elif kind == "X":
            x = json.loads(payload)
            self.execs.append(x)
            if not x["cached"]:
                decision = self.policy(x)
                if decision is None:
                    self.held.append(x)
                else:
                    self.verdict(x, decision, self.cache and decision)

    def wait_for(self, cond: Callable[[], object], what: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline or (self.eof and self.proc.poll() is not None):
                raise AssertionError(f"no {what} within {timeout:.0f} s; {self.describe()}")
            self.pump(0.2)

    def wait_exit(self, timeout: float = WAIT) -> int:
        self.wait_for(lambda: self.eof, "end of the guard's output", timeout)
        rc = self.proc.wait(timeout)
        assert self.proc.stderr is not None
        self.stderr += self.proc.stderr.read()
        return rc

    def exec_of(self, program: str) -> dict:
        """The first exec report whose names include `program` (waits for it)."""
        self.wait_for(lambda: any(program in x["names"] for x in self.execs), f"exec of {program}")
        return next(x for x in self.execs if program in x["names"])

    def describe(self) -> str:
        return (f"frames {[k for k, _ in self.frames]}, out {bytes(self.out[-400:])!r}, err {bytes(self.err)!r}, "
                f"execs {[x['argv'] for x in self.execs]}, quit {self.quit}, guard stderr {bytes(self.stderr)!r}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass


@pytest.fixture
def guard(tmp_path: Path):
    runs: list[GuardRun] = []

    def make(**kw) -> GuardRun:
        run = GuardRun(tmp_path, **kw)
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.close()


def gone(pid: int) -> bool:
    """The process is dead (a zombie counts: a container's init may never reap orphans)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return "\nState:\tZ" in status


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        assert time.monotonic() < deadline, f"process {pid} still runs: the guarded tree outlived the guard"
        time.sleep(0.05)


def task_state(pid: int) -> str:
    """R, S, t (stopped by its tracer), T (stopped), Z; "gone" when it is."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return "gone"
    return next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "?")


# ---------------------------------------------------------------------------------------------------------------
# the codec


FRAMES = [("H", b""), ("O", b"hi\n"), ("I", bytes(range(256))), ("X", b"{}" * 1000), ("E", b"")]


@pytest.mark.parametrize("chunk", [1, 2, 5, 7, 4096])
def test_codec_round_trip_in_any_split(chunk: int) -> None:
    frames = FRAMES + ([("Q", b"x" * MAX_FRAME)] if chunk >= 4096 else [])  # a full-size one, not byte by byte
    stream = b"".join(encode(k, p) for k, p in frames)
    reader = FrameReader()
    got: list[tuple[str, bytes]] = []
    for i in range(0, len(stream), chunk):
        got += reader.feed(stream[i:i + chunk])
    assert got == frames
    assert reader.feed(b"") == []


def test_codec_split_feeds_keep_partial_frames() -> None:
    stream = b"".join(encode(k, p) for k, p in FRAMES)
    reader = FrameReader()
    assert reader.feed(stream[:4]) == []  # not even a header yet
    assert reader.feed(stream[4:8]) == [("H", b"")]
    assert reader.feed(stream[8:] + encode("C")[:3]) == FRAMES[1:]
    assert reader.feed(encode("C")[3:] + encode("E")) == [("C", b""), ("E", b"")]


def test_codec_layout_and_json() -> None:
    assert encode("I", b"ab") == b"I\x00\x00\x00\x02ab"
    assert len(encode("Q", b"x" * MAX_FRAME)) == MAX_FRAME + 5
    argv = [b"rm", b"caf\xc3\xa9", b"bad\xff"]
    obj = {"argv": [a.decode("utf-8", "surrogateescape") for a in argv]}
    frame = encode_json("X", obj)
    assert frame[5:].isascii()
    ((kind, payload),) = FrameReader().feed(frame)
    back = json.loads(payload)
    assert kind == "X" and [a.encode("utf-8", "surrogateescape") for a in back["argv"]] == argv


@pytest.mark.parametrize("data", [
    b"\x00\x00\x00\x00\x00",                           # type byte not a letter
    b"1\x00\x00\x00\x00",                              # a digit is not a letter either
    b"\xc3",                                           # detected before the header is complete
    b"O" + (MAX_FRAME + 1).to_bytes(4, "big"),         # oversized length, refused before its payload
    encode("O", b"ok") + b"{\x00\x00\x00\x00",         # garbage after a good frame
])
def test_codec_rejects_garbage(data: bytes) -> None:
    with pytest.raises(FrameError):
        FrameReader().feed(data)


@pytest.mark.parametrize(("kind", "payload"), [("XY", b""), ("", b""), ("1", b""), ("é", b""),
                                               ("O", b"x" * (MAX_FRAME + 1))])
def test_encode_refuses(kind: str, payload: bytes) -> None:
    with pytest.raises(ValueError):
        encode(kind, payload)


def test_agent_is_one_standalone_python39_file() -> None:
    source = AGENT.read_text()
    assert source.startswith("#!/usr/bin/env python3\n")
    tree = ast.parse(source, feature_version=(3, 9))  # no match statements, no 3.10+ syntax
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module is not None
            imported.add(node.module.split(".")[0])
    assert imported - {"__future__"} <= sys.stdlib_module_names
    assert any(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in tree.body)


# ---------------------------------------------------------------------------------------------------------------
# sessions in pipes mode


@pytest.mark.parametrize(("command", "out", "err", "status", "sig", "later_execs"), [
    ("echo hi; echo err >&2; exit 3", b"hi\n", b"err\n", 3, None, []),           # builtins: no exec
    ("/bin/echo hi; echo err >&2; exit 3", b"hi\n", b"err\n", 3, None, [["/bin/echo", "hi"]]),
    ("kill -9 $$", b"", b"", None, signal.SIGKILL, []),
])
def test_pipes_session(guard, command, out, err, status, sig, later_execs) -> None:
    g = guard().start(command)
    rc = g.wait_exit()
    assert g.hello is not None and g.hello["mechanism"] == "ptrace" and g.hello["pid"] == g.proc.pid
    assert g.frames[0][0] == "H" and g.frames[-1][0] == "Q"
    assert (bytes(g.out), bytes(g.err)) == (out, err)
    assert g.quit == {"status": status, "signal": sig}
    assert rc == (status if sig is None else 128 + sig)
    first, *later = g.execs
    assert first["first"] is True and first["argv"] == [SHELL, "-c", command] and first["chain"] == [OWN_COMM]
    assert first["trusted"] is True and first["cached"] is False
    assert [x["argv"] for x in later] == later_execs
    assert all(x["first"] is False for x in later)


@pytest.mark.parametrize(("command", "chunks", "out"), [
    ("tr a-z A-Z", [b"hello ", b"world\n"], b"HELLO WORLD\n"),
    ("wc -c", [b"x" * 65536] * 40, b"2621440\n"),  # far more than a pipe holds: buffered, never blocking
])
def test_input_and_end_of_input_reach_the_command(guard, command: str, chunks: list[bytes], out: bytes) -> None:
    g = guard().start(command)
    for chunk in chunks:
        g.send("I", chunk)
    g.send("E")
    assert g.wait_exit() == 0
    assert bytes(g.out).strip() == out.strip() and g.quit == {"status": 0, "signal": None}


@pytest.mark.parametrize("term", [None, "xterm"])
def test_the_session_inherits_only_its_own_stdio(guard, term: str | None) -> None:
    g = guard().start("ls -1 /proc/$$/fd; readlink /proc/$$/fd/0 /proc/$$/fd/1 /proc/$$/fd/2", term=term)
    assert g.proc.stdin is not None and g.proc.stdout is not None
    channel = {os.readlink(f"/proc/self/fd/{f.fileno()}").encode() for f in (g.proc.stdin, g.proc.stdout)}
    assert g.wait_exit() == 0
    lines = bytes(g.out).replace(b"\r\n", b"\n").split(b"\n")
    assert lines[:3] == [b"0", b"1", b"2"]  # nothing else: not the channel, no pipe of the guard
    assert not channel & set(lines[3:6]) and len(set(lines[3:6])) == (1 if term else 3)


def test_large_output_is_framed(guard) -> None:
    g = guard().start("head -c 3000000 /dev/zero | tr '\\0' x; echo end >&2")
    assert g.wait_exit() == 0
    assert bytes(g.out) == b"x" * 3000000 and bytes(g.err) == b"end\n"
    assert max(len(p) for k, p in g.frames if k == "O") <= 65536


def test_signal_frame_reaches_the_command(guard) -> None:
    g = guard().start("sleep 30")
    sleep = g.exec_of("sleep")
    assert sleep["pid"] == g.execs[0]["pid"] and sleep["first"] is False  # bash -c execs its one command itself
    g.send_json("K", {"signal": "NOSUCH"})  # ignored
    g.send_json("K", {"signal": "INT"})
    assert g.wait_exit() == 128 + signal.SIGINT
    assert g.quit == {"status": None, "signal": signal.SIGINT}


def test_denied_rm_is_killed_and_allowed_ls_runs(guard, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("keep")
    g = guard(policy=deny_rm).start("rm f; echo rc=$?; ls f")
    assert g.wait_exit() == 0
    assert (tmp_path / "f").read_text() == "keep"
    assert b"rc=137\n" in g.out  # the shell saw its child killed (SIGKILL)
    assert b"Killed" in g.err
    assert bytes(g.out).endswith(b"f\n")  # ls ran
    rm = g.exec_of("rm")
    assert rm["argv"] == ["rm", "f"] and rm["trusted"] is True and rm["copy_of"] is None
    assert rm["exe"].endswith("/rm") and rm["cwd"] == str(tmp_path)
    assert rm["chain"] == [os.path.basename(g.execs[0]["exe"]), OWN_COMM]
    assert g.exec_of("ls")["argv"] == ["ls", "f"]


PY = sys.executable
FORKS = [  # (label, command, the program whose child runs rm: argv[0]'s basename, None for the session's shell)
    ("subshell", "(sleep 0.1; rm f) & wait; echo done", None),
    ("awk", "awk 'BEGIN{system(\"rm f\")}'; echo done", "awk"),
    ("vfork", f"{PY} -c 'import subprocess; subprocess.run([\"rm\", \"f\"])'; echo done",  # posix_spawn/vfork
     os.path.basename(PY)),
    ("thread", f"{PY} -c 'import threading, subprocess; t = threading.Thread(target=subprocess.run, "
               f"args=([\"rm\", \"f\"],)); t.start(); t.join()'; echo done", os.path.basename(PY)),
]


@pytest.mark.parametrize(("label", "command", "via"), FORKS, ids=[f[0] for f in FORKS])
def test_forks_are_followed(guard, tmp_path: Path, label: str, command: str, via: str | None) -> None:
    if via and not shutil.which(via):
        pytest.skip(f"no {via} on this machine")
    (tmp_path / "f").write_text("keep")
    g = guard(policy=deny_rm).start(command)
    assert g.wait_exit() == 0
    assert (tmp_path / "f").exists() and b"done" in g.out
    rm = g.exec_of("rm")
    parent_exec = next(x for x in g.execs if x["argv"] and os.path.basename(x["argv"][0]) == via) if via else g.execs[0]
    parent = os.path.basename(parent_exec["exe"])
    assert parent in rm["chain"] and rm["chain"][-1] == OWN_COMM
    assert rm["pid"] != g.execs[0]["pid"]  # a forked process, not the session's first


def test_a_thread_that_execs_is_judged(guard) -> None:
    """A non-leader thread's exec: the process keeps its pid, the guard forgets the thread's old id."""
    g = guard().start(f"{PY} -c 'import os, threading; threading.Thread(target=os.execv, "
                      f"args=(\"/bin/echo\", [\"echo\", \"from-thread\"])).start(); threading.Event().wait()'")
    assert g.wait_exit() == 0
    echo = g.exec_of("echo")
    assert echo["argv"] == ["echo", "from-thread"] and echo["pid"] == g.execs[0]["pid"]
    assert bytes(g.out) == b"from-thread\n"


ESCAPE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
clone = {"x86_64": 56, "aarch64": 220, "riscv64": 220, "ppc64le": 120}[os.uname().machine]
pid = libc.syscall(clone, 0x00800000 | 17, 0, 0, 0, 0)  # CLONE_UNTRACED | SIGCHLD
if pid == 0:
    os.execv("/bin/echo", ["echo", "escaped"])
print("clone", pid, ctypes.get_errno())
print("clone3", libc.syscall(435, 0, 0), ctypes.get_errno())
"""


def test_no_child_escapes_the_trace(guard, tmp_path: Path) -> None:
    """clone(CLONE_UNTRACED) would make a child the guard never sees: refused (EPERM); clone3 is ENOSYS."""
    (tmp_path / "escape.py").write_text(ESCAPE)
    g = guard().start(f"{PY} escape.py")
    assert g.wait_exit() == 0
    assert bytes(g.out) == b"clone -1 1\nclone3 -1 38\n"
    assert not any("echo" in x["names"] for x in g.execs)


@pytest.mark.parametrize("protect", [(), (-1, 4_194_303, -4_194_303, 1234, -1234, 77, -77, 88, -88, 99, -99)])
@pytest.mark.parametrize("machine", sorted(SECCOMP_ARCHES))
def test_clone_filter_is_well_formed(machine: str, protect: tuple[int, ...]) -> None:
    prog = clone_filter(machine, protect)
    assert len(prog) < 256 and prog[-1] == (0x06, 0, 0, 0x80000000)  # unknown ABIs are killed
    for pc, (code, jt, jf, k) in enumerate(prog):
        if code == 0x05:  # ja: a jump lands inside the program
            assert pc + 1 + k < len(prog)
        elif code & 0x07 == 0x05:
            assert pc + 1 + max(jt, jf) < len(prog)
    arches, pc = [], 1  # one block per ABI: its test of the arch skips to the next one
    while pc < len(prog) - 1:
        code, _, jf, k = prog[pc]
        assert code == 0x15
        arches.append(k)
        block = prog[pc + 1:pc + 1 + jf]
        eperm = [i for i, insn in enumerate(block) if insn == (0x06, 0, 0, 0x00050000 | 1)]
        refused = {k for i, (code, jt, _, k) in enumerate(block) if code == 0x15 and jt and i + 1 + jt in eperm}
        assert {t & 0xFFFFFFFF for t in protect} <= refused
        pc += 1 + jf
    assert arches == [a[0] for a in SECCOMP_ARCHES[machine]]


STOPS = """
import ctypes, fcntl, os, signal
libc = ctypes.CDLL(None, use_errno=True)
guard = os.getppid()
above = int(open(f"/proc/{guard}/status").read().split("PPid:")[1].split()[0])  # the wrapper that started it


def tgkill():
    if libc.tgkill(guard, guard, signal.SIGTTIN) != 0:
        raise OSError(ctypes.get_errno(), "tgkill")


for how, call in [
    ("kill", lambda: os.kill(guard, signal.SIGSTOP)),
    ("killpg", lambda: os.killpg(os.getpgid(guard), signal.SIGTSTP)),
    ("tgkill", tgkill),
    ("above", lambda: os.kill(above, signal.SIGTTOU)),
    ("pidfd", lambda: signal.pidfd_send_signal(os.pidfd_open(guard), signal.SIGSTOP)),
    ("f_setsig", lambda: fcntl.fcntl(0, 10, signal.SIGSTOP)),
]:
    try:
        call()
        print(how, "sent", flush=True)
    except OSError as e:
        print(how, e.errno, flush=True)
child = os.fork()
if child == 0:
    signal.pause()
    os._exit(0)
os.kill(child, signal.SIGSTOP)  # its own child: job control as ever
print("child", os.WIFSTOPPED(os.waitpid(child, os.WUNTRACED)[1]))
os.kill(child, signal.SIGKILL)
os.waitpid(child, 0)
print("pidfd-own", signal.pidfd_send_signal(os.pidfd_open(os.getpid()), 0))
"""
# the guard under a process of the same user in a process group of its own: were the filter to let a stop signal
# through, it would stop these two, not the test (kill(-1), which would stop every process of the user running the
# tests, is checked in the filter's program above, never sent)
WRAPPED = (sys.executable, "-c", "import os, subprocess, sys; os.setsid(); sys.exit(subprocess.call(sys.argv[1:]))",
           sys.executable)


def test_the_session_cannot_stop_its_guard(guard, tmp_path: Path) -> None:
    """A stopped guard ends nothing: what runs would outlive the session. The session may not send a stop signal
    to the guard or to the processes of its user above it (sshd's, which holds the channel); its own processes
    stop and continue as ever."""
    (tmp_path / "stops.py").write_text(STOPS)
    g = guard(python=WRAPPED).start(f"{PY} stops.py")
    try:
        assert g.wait_exit() == 0, g.describe()
    finally:
        if g.hello is not None and not gone(g.hello["pid"]):  # a guard stopped after all: it ends here
            os.kill(g.hello["pid"], signal.SIGKILL)
    assert bytes(g.out).decode().splitlines() == [
        "kill 1", "killpg 1", "tgkill 1", "above 1", "pidfd 1", "f_setsig 1", "child True",
        "pidfd-own None"]


def test_what_the_session_may_not_stop() -> None:
    """The guard, its process group, the processes of its user above it and their groups, and -1 (everything)."""
    protect = _protected()
    assert protect[:3] == (-1, os.getpid(), -os.getpgid(0))
    parent = os.getppid()
    if parent > 1 and Path(f"/proc/{parent}").stat().st_uid == os.getuid():  # init is never in the chain
        assert parent in protect and -os.getpgid(parent) in protect
    assert 1 not in protect and -1 in protect  # pid 1 (the test run may be init's child) vs -1: everything


def test_a_hard_link_has_every_name_of_its_file(tmp_path: Path) -> None:
    """perl and perl5.36.0 are one file (a hard link, not a symlink): a rule on either name holds for both."""
    (tmp_path / "tool").write_text("#!/bin/sh\n")
    os.link(tmp_path / "tool", tmp_path / "tool-1.2")
    (tmp_path / "other").write_text("#!/bin/sh\n")
    index = ProgramIndex((str(tmp_path),))
    assert index.names_of(os.stat(tmp_path / "tool-1.2")) == {"tool", "tool-1.2"}
    assert index.names_of(os.stat(tmp_path / "other")) == {"other"}


HARD_LINKED = [("bunzip2", "bzip2"), ("uncompress", "gunzip"), ("zipinfo", "unzip"), ("unxz", "xz"),
               ("unzstd", "zstd")]  # harmless with --version (and stdin from /dev/null), hard links on Debian


def _hard_linked_program() -> tuple[str, str] | None:
    """Two names of one system program that are hard links of each other, not symlinks, if any here."""
    perls = sorted(p.name for p in Path("/usr/bin").glob("perl5.*"))
    for name, other in HARD_LINKED + [(p, "perl") for p in perls]:
        try:
            a, b = os.lstat(f"/usr/bin/{name}"), os.lstat(f"/usr/bin/{other}")
        except OSError:
            continue
        if stat.S_ISREG(a.st_mode) and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
            return name, other
    return None


def test_an_exec_by_one_name_of_a_hard_link_reports_all(guard) -> None:
    pair = _hard_linked_program()
    if pair is None:
        pytest.skip("no hard-linked system programs on this machine")
    name, other = pair
    g = guard(policy=lambda x: x["first"] or other not in x["names"]).start(f"/usr/bin/{name} --version </dev/null")
    g.wait_exit()
    x = g.exec_of(name)
    assert other in x["names"], x


def test_a_bind_mount_over_a_system_name_is_judged_by_its_file(guard, tmp_path: Path) -> None:
    """In a mount namespace of its own (unshare -rm: no privilege needed where user namespaces are allowed) the
    session can show rm's file under /usr/bin/ls; its exe reads /usr/bin/ls. It is judged by the file: rm."""
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("no user namespaces here")
    (tmp_path / "f").write_text("keep")
    ls, rm = shutil.which("ls"), shutil.which("rm")
    g = guard(policy=deny_rm).start(f"unshare -rm sh -c 'mount --bind {rm} {ls} && {ls} f'; echo rc=$?")
    assert g.wait_exit() == 0
    assert (tmp_path / "f").read_text() == "keep"
    x = next(x for x in g.execs if x["argv"] == [ls, "f"])
    assert "rm" in x["names"] and x["trusted"] is False, x


def test_a_copy_rewritten_in_place_is_judged_again(guard, tmp_path: Path) -> None:
    """A cached verdict is for a file as it was: a copy of true, allowed and cached, then rewritten in place (its
    mtime set back) is another program, judged again before it runs."""
    g = guard(cache=True).start(
        "cp /bin/true x; ./x; m=$(stat -c %y x); "
        f"{PY} -c 'import sys; f = open(\"x\", \"r+b\"); f.seek(-1, 2); b = f.read(1); f.seek(-1, 2); "
        f"f.write(bytes([b[0] ^ 1]))'; touch -d \"$m\" x; ./x; ./x")
    assert g.wait_exit() == 0
    xs = [x for x in g.execs if x["argv"] == ["./x"]]
    assert [(x["cached"], x["copy_of"] is not None) for x in xs] == [(False, True), (False, False), (True, False)]


def test_a_copy_is_judged_as_the_original(guard, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("keep")
    g = guard(policy=deny_rm).start("cp /bin/rm ./y; ./y f; echo rc=$?")
    assert g.wait_exit() == 0
    assert (tmp_path / "f").exists() and b"rc=137" in g.out
    y = next(x for x in g.execs if x["argv"][:1] == ["./y"])
    assert y["exe"] == str(tmp_path / "y")
    assert y["trusted"] is False and y["copy_of"] is not None and y["copy_of"].endswith("/rm")
    assert "rm" in y["names"] and "y" in y["names"]


def test_a_held_exec_does_not_run_until_its_verdict(guard) -> None:
    g = guard(policy=lambda x: True if x["first"] else None).start("/bin/echo held-output; echo after")
    g.wait_for(lambda: g.held, "held exec")
    (x,) = g.held
    assert x["argv"] == ["/bin/echo", "held-output"] and x["cached"] is False
    assert task_state(x["pid"]) == "t"  # stopped by the tracer, before its first instruction
    g.pump(0.3)
    assert b"held-output" not in g.out and g.quit is None
    g.verdict(x, True)
    assert g.wait_exit() == 0
    assert bytes(g.out) == b"held-output\nafter\n"


def test_a_denied_held_exec_never_runs(guard) -> None:
    g = guard(policy=lambda x: True if x["first"] else None).start("/bin/echo held-output; echo rc=$?")
    g.wait_for(lambda: g.held, "held exec")
    g.verdict(g.held[0], False)
    g.send_json("V", {"id": 12345, "allow": True, "cache": False})  # an unknown id is ignored
    assert g.wait_exit() == 0
    assert bytes(g.out) == b"rc=137\n"


def test_cached_verdicts_skip_the_round_trip_until_cleared(guard) -> None:
    g = guard(cache=True).start("for i in 1 2 3; do /bin/true; done; echo loop; read x; /bin/true; /bin/true")
    g.wait_for(lambda: b"loop" in g.out, "the first loop")
    trues = [x for x in g.execs if x["argv"] == ["/bin/true"]]
    assert [x["cached"] for x in trues] == [False, True, True]
    assert len({x["id"] for x in trues}) == 3
    g.send("C")  # config reloaded: the next one is asked again
    g.send("I", b"\n")
    assert g.wait_exit() == 0
    trues = [x for x in g.execs if x["argv"] == ["/bin/true"]]
    assert [x["cached"] for x in trues] == [False, True, True, False, True]
    asked = {v["id"] for v in g.verdicts}
    assert [x["id"] in asked for x in trues] == [True, False, False, True, False]


# ---------------------------------------------------------------------------------------------------------------
# sessions with a terminal


def pty_shell(guard) -> GuardRun:
    return guard().start(None, term="xterm", cols=80, rows=24, env={"TERM": "xterm", "PS1": "$ "})


def test_pty_login_shell(guard, tmp_path: Path) -> None:
    g = pty_shell(guard)
    g.wait_for(lambda: g.execs, "the login shell")
    first = g.execs[0]
    assert first["first"] is True and first["argv"] == ["-" + os.path.basename(SHELL)]
    assert first["cwd"] == str(tmp_path)  # $HOME
    assert os.path.basename(SHELL) in first["names"]
    g.send("I", b"echo $((6*7)) $TERM\n")
    g.wait_for(lambda: b"42 xterm" in g.out, "the shell's answer")
    g.send("I", b"stty size\n")
    g.wait_for(lambda: b"24 80" in g.out, "the first window size")
    g.send_json("W", {"cols": 101, "rows": 33})
    g.send("I", b"stty size\n")
    g.wait_for(lambda: b"33 101" in g.out, "the new window size")
    g.send("I", b"sleep 30\n")
    sleep = g.exec_of("sleep")
    g.send_json("K", {"signal": "INT"})  # to the terminal's foreground process group: the sleep
    wait_gone(sleep["pid"])
    g.send("I", b"echo rc-$?\n")
    g.wait_for(lambda: b"rc-130" in g.out, "the interrupted command's status")
    g.send("I", b"exit 4\n")
    assert g.wait_exit() == 4
    assert g.quit == {"status": 4, "signal": None}
    assert not g.err  # no R frames in pty mode


def test_pty_job_control_survives_ctrl_z(guard) -> None:
    g = pty_shell(guard)
    g.send("I", b"sleep 30\n")
    sleep = g.exec_of("sleep")
    g.send("I", b"\x1a")  # Ctrl-Z
    g.wait_for(lambda: b"Stopped" in g.out, "the job's stop")
    assert task_state(sleep["pid"]) in ("t", "T")
    g.send("I", b"echo alive-$((2+3))\n")
    g.wait_for(lambda: b"alive-5" in g.out, "the shell, still alive")
    g.send("I", b"fg\n")  # SIGCONT wakes the listening job, in the foreground again
    g.wait_for(lambda: task_state(sleep["pid"]) in ("S", "R"), "the job running again")
    g.send("I", b"\x03")  # Ctrl-C: its SIGINT goes through the guard to the job
    wait_gone(sleep["pid"])
    g.send("I", b"echo after-$((1+1))\n")
    g.wait_for(lambda: b"after-2" in g.out, "the shell's prompt after the job")
    g.send("I", b"exit\n")
    assert g.wait_exit() == 0


# ---------------------------------------------------------------------------------------------------------------
# the end of the guard ends the session


@pytest.mark.parametrize("how", ["kill -9 the guard", "EOF on its stdin", "garbage frame", "SIGTERM"])
def test_the_tree_dies_with_the_guard(guard, how: str) -> None:
    g = guard().start("sleep 300 & echo $!; wait")
    g.wait_for(lambda: b"\n" in g.out, "the background pid")
    pid = int(bytes(g.out).split()[0])
    g.exec_of("sleep")
    assert not gone(pid)
    if how == "kill -9 the guard":
        g.proc.kill()
    elif how == "SIGTERM":
        g.proc.terminate()
    elif how == "EOF on its stdin":
        assert g.proc.stdin is not None
        g.proc.stdin.close()
    else:
        g.send_raw(b"\x00garbage")
    rc = g.wait_exit()
    assert rc == (-signal.SIGKILL if how.startswith("kill") else 255)
    assert g.quit is None
    wait_gone(pid)


NO_PTRACE = """
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
ptrace = {"x86_64": 101, "aarch64": 117, "riscv64": 117, "ppc64le": 26}[os.uname().machine]
prog = [(0x20, 0, 0, 0), (0x15, 0, 1, ptrace), (0x06, 0, 0, 0x50000 | 1), (0x06, 0, 0, 0x7FFF0000)]
buf = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *i) for i in prog))
fprog = struct.pack("=HxxxxxxQ", len(prog), ctypes.addressof(buf))
fbuf = ctypes.create_string_buffer(fprog)
assert libc.prctl(38, 1, 0, 0, 0) == 0 and libc.prctl(22, 2, ctypes.addressof(fbuf), 0, 0) == 0
os.execv(sys.executable, [sys.executable] + sys.argv[1:])
"""


def test_without_ptrace_the_session_is_refused(guard, tmp_path: Path) -> None:
    """Fail closed: where ptrace is forbidden (here by a seccomp filter) the session never runs unsupervised."""
    g = guard(python=(sys.executable, "-c", NO_PTRACE), refusal_expected=True).start("touch ran")
    assert g.wait_exit() == 126
    assert [k for k, _ in g.frames] == ["H", "N", "Q"] and g.quit == {"status": 126, "signal": None}
    assert "ptrace is not permitted: Operation not permitted" in g.notices[0]
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("args", [
    (), ("--session",), ("--session", "bad id"), ("--session", "x" * 65), ("--session", "t1", "extra"),
    ("--sess", "t1"), ("--session", "t1\n"), ("--session", ""),
])
def test_bad_invocation_exits_2(guard, args: tuple[str, ...]) -> None:
    g = guard(args=args)
    assert g.wait_exit() == 2
    assert g.frames == [] and b"usage" in g.stderr


@pytest.mark.parametrize(("frames", "rc"), [
    (b"\x00\x00\x00\x00\x01x", 255),                                         # not a frame
    (b"S" + (MAX_FRAME + 1).to_bytes(4, "big"), 255),                        # oversized
    (encode("Z", b""), 255),                                                 # a type nobody knows
    (encode("S", b"not json"), 2),
    (encode_json("S", {"v": 1, "session": "t1", "command": None, "term": None, "cols": 80, "rows": 24,
                       "env": {}}), 2),                                      # a login shell needs a terminal
    (encode_json("S", {"v": 1, "session": "other", "command": "true", "term": None, "cols": 80, "rows": 24,
                       "env": {}}), 2),                                      # another session's start
    (encode_json("S", {"v": 1, "session": "t1", "command": "true", "term": None, "cols": 80, "rows": 24,
                       "env": {"A": 1}}), 2),
])
def test_bad_frames_before_the_start(guard, frames: bytes, rc: int) -> None:
    g = guard()
    g.send_raw(frames)
    assert g.wait_exit() == rc
    assert [k for k, _ in g.frames if k != "N"] == ["H"] and g.execs == []


def test_check_mode_says_whether_sessions_can_be_supervised_here() -> None:
    """``bastion-guard --check`` (the Ansible task runs it on each target) runs ``true`` under a real guard."""
    out = subprocess.run([sys.executable, str(AGENT), "--check"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "supervision works here" in out.stdout and "exec(s) judged" in out.stdout


def test_the_session_shell_is_shell_from_the_environment_unless_it_is_nologin(tmp_path: Path) -> None:
    """A sandbox may run the session as an account whose passwd shell is nologin, with a real $SHELL."""
    from guard import agent as mod

    entry = pwd.getpwuid(os.getuid())
    for env_shell, want in (("/bin/sh", "/bin/sh"), ("/usr/sbin/nologin", entry.pw_shell), ("sh", entry.pw_shell),
                            (str(tmp_path / "missing"), entry.pw_shell)):
        old = os.environ.get("SHELL")
        os.environ["SHELL"] = env_shell
        try:
            assert mod._login_shell(entry) == want
        finally:
            if old is None:
                del os.environ["SHELL"]
            else:
                os.environ["SHELL"] = old


def test_the_environment_the_session_set_is_reported_by_name_only(guard) -> None:
    """What the session set or changed in a program's environment is reported by name (the daemon refuses
    LD_PRELOAD and its kind), never by value (a value may be a secret); what the session was started with is not
    reported at all."""
    g = guard().start("MY_TOKEN=hunter2-secret LD_PRELOAD= /bin/echo a; /bin/echo b")
    assert g.wait_exit() == 0
    a, b = g.exec_of("echo"), [x for x in g.execs if x["argv"][-1:] == ["b"]][0]
    assert {"MY_TOKEN", "LD_PRELOAD"} <= set(a["env"]), a["env"]
    assert not {"MY_TOKEN", "LD_PRELOAD", "PATH", "HOME"} & set(b["env"]), b["env"]
    assert all("hunter2" not in json.dumps(x["env"]) for x in g.execs)


def test_arguments_that_are_system_files_are_vouched_for(guard, tmp_path: Path) -> None:
    """The daemon lets an interpreter run a system script (python3 -Es /usr/bin/lsb_release) by name: the guard
    says which of the first arguments are trusted files, reached through directories the session cannot change."""
    env = shutil.which("env")
    assert env is not None and env.startswith("/usr/")
    (tmp_path / "mine").write_text("print(1)\n")
    (tmp_path / "link").symlink_to(env)
    g = guard().start(f"/bin/echo {env} {tmp_path}/mine {tmp_path}/link /usr/bin/../../{tmp_path}/mine")
    assert g.wait_exit() == 0
    assert g.exec_of("echo")["trusted_args"] == [1]
    g = guard().start(f"/bin/echo ./x x -c {env}")  # past the first four arguments nothing is looked at
    g.wait_exit()
    assert g.exec_of("echo")["trusted_args"] == [4]
