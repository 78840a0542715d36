"""Red-team probes of bastion-guard (docs/guard.md) through the stock OpenSSH client: an operator who wants to delete
a file (``rm`` is blocked by the ``execs`` policy of tests/integration/test_guard_e2e.py), to run something unjudged
or unrecorded, or to fool a reviewer. One table per class, each paired with harmless work that must keep working:

- leaving the traced tree: clone(CLONE_UNTRACED), clone3, vfork, setsid, nohup, a double-fork daemon, script,
  tmux, user and pid namespaces; processes that would outlive the session (daemonised, event-less, held);
- running a program without a judged exec: the dynamic loader (as a program, a copy, a symlink, a shebang),
  memfd + fexecve, execveat, /proc/self/fd, a renamed interpreter, argv[0], a shebang to a copy, a hard link, a
  bind mount in a mount namespace of its own, binfmt_misc, a modified copy, a cached copy rewritten in place, a
  program run under an approved command's name;
- attacking the guard: killing it, stopping it (or sshd above it), tracing it or reading it through /proc, writing
  bytes that look like frames, a huge argv, an undecodable argv, an argv that draws on the operator's or the
  reviewer's screen;
- approvals: withdrawn (Ctrl-C, hang-up), denied, an argv swapped while held.

Found and closed (each also has a unit test): a bind mount of rm over a system path in a mount namespace, a cached
copy rewritten in place, stopping the guard or sshd, control characters in markers and requests, a program run
under an approved command's name, a hang-up leaving a held request to be cancelled. Holes that cannot be closed
in the guard are ``xfail(strict=True)`` with the reason: startup files the target runs before the guard, native
code loaded into an allowed program, another process writing a held program's memory, a concurrent session
stopping this one's guard. Tests wait on what the screen, the files or /proc show, never on fixed sleeps."""

from __future__ import annotations

import glob
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.config import load_config
from bastion.store.approvals import ApprovalStore
from bastion.store.db import Store
from recorder.asciicast import read_cast
from tests.integration.conftest import BastionEnv
from tests.integration.test_guard_e2e import guarded, login_user, own, run, shell, typed, work  # noqa: F401
from tests.support.review import approve
from tests.support.ssh_client import ssh_argv
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow
PROMPT = r"[#$] *$"
BLOCKED = r"blocked by rule 'no-rm'"
LOADER_BLOCKED = r"blocked by rule 'guard-loader'"
LOADER = next(iter(sorted(glob.glob("/lib64/ld-linux*.so.*") + glob.glob("/lib/ld-linux*.so.*"))), "")
HELD = r"waiting for approval \(request #\d+, rule (chmod-needs-approval|guard-unknown-program)\)"


def _as_login_user(*argv: str) -> bool:
    """Whether ``argv`` succeeds as the guarded login user (user namespaces, a compiler, ...)."""
    user = pwd.getpwnam(login_user())
    prefix = [] if os.geteuid() == user.pw_uid else ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                                                       "--clear-groups"]
    try:
        return subprocess.run([*prefix, *argv], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


USERNS = _as_login_user("unshare", "-r", "true")
NEEDS_USERNS = pytest.mark.skipif(not USERNS, reason="no unprivileged user namespaces here")
# kill(-1, SIGSTOP) is tried only where the session is a user of its own: elsewhere a regression would stop the
# processes of whoever runs the tests
OWN_USER = pwd.getpwnam(login_user()).pw_uid != os.geteuid()


def home() -> Path:
    return Path(pwd.getpwnam(login_user()).pw_dir)


def put(d: Path, name: str, text: str) -> Path:
    """A file of the login user's in the work directory ``d``."""
    p = d / name
    p.write_text(text)
    own(p)
    return p


def keep(d: Path) -> Path:
    return put(d, "f", "keep me\n")


def run_bytes(env: BastionEnv, command: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(ssh_argv(env.keys["alice"], env.port, "alice", "web-guarded", "--", command, tty=False),
                          capture_output=True, timeout=90)


def markers_of(env: BastionEnv, tag: str) -> list[str]:
    """The exec markers (and guard notices) of the latest exec-form session whose command contains ``tag``."""
    sessions = json.loads(env.bastion("sessions", "list", "--json").stdout)
    rec = next(Path(s["recording"]) for s in sessions if s["command"] and tag in s["command"])
    return [e.data for e in read_cast(rec).events if e.code == "m"]


def wait_gone(pid: int, timeout: float = 20) -> None:
    """The process ended (a zombie counts: the container's init may never reap orphans)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state == "Z":
            return
        assert time.monotonic() < deadline, f"process {pid} ({state}) outlived the session"
        time.sleep(0.05)


def pids_of(cmdline: bytes) -> list[int]:
    """The processes whose /proc/PID/cmdline is ``cmdline``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes() == cmdline:
                found.append(int(pid))
        except OSError:
            pass
    return found


def until(path: str) -> str:
    """Shell: wait for ``path`` to exist (what a probe's background part writes when it is done)."""
    return f"until [ -e {path} ]; do sleep 0.05; done"


# ------------------------------------------------------------------------------------ leaving the traced tree

CLONE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
clone = {"x86_64": 56, "aarch64": 220, "riscv64": 220, "ppc64le": 120}[os.uname().machine]
pid = libc.syscall(clone, 0x00800000 | 17, 0, 0, 0, 0)  # CLONE_UNTRACED | SIGCHLD
if pid == 0:
    os.execv("/bin/rm", ["rm", "f"])
print("clone", pid, ctypes.get_errno())
print("clone3", libc.syscall(435, 0, 0), ctypes.get_errno())
"""

LEAVE_TREE = [  # (name, command run in the work directory, what the output must show); the file f must stay
    ("clone-untraced", "python3 clone.py", r"clone -1 1\nclone3 -1 38"),
    ("vfork-posix-spawn", "python3 -c 'import os; os.waitpid(os.posix_spawn(\"/bin/rm\", [\"rm\", \"f\"], {}), 0)'",
     BLOCKED),
    ("setsid-fork", f"setsid -f sh -c 'rm f; touch done'; {until('done')}", BLOCKED),
    ("nohup", "nohup rm f", BLOCKED),
    ("double-fork-daemon", f"(setsid sh -c 'nohup rm f >/dev/null 2>&1; touch done' &); {until('done')}", BLOCKED),
    ("script", "script -qc 'rm f' /dev/null", BLOCKED),
    ("tmux-server", f"tmux -S ./t.sock new -d 'rm f; touch done'; {until('done')}; tmux -S ./t.sock kill-server",
     BLOCKED),
    ("user-namespace", "unshare -r rm f", BLOCKED),
    ("pid-namespace", "unshare -rpf --mount-proc rm f", BLOCKED),
]
NEEDS = {"user-namespace": NEEDS_USERNS, "pid-namespace": NEEDS_USERNS,
         "tmux-server": pytest.mark.skipif(not shutil.which("tmux"), reason="no tmux")}


def _rows(table: list[tuple[str, str, str]]) -> list[object]:
    return [pytest.param(*row, id=row[0], marks=[NEEDS[row[0]]] if row[0] in NEEDS else []) for row in table]


@pytest.mark.parametrize(("name", "command", "shows"), _rows(LEAVE_TREE))
def test_no_way_out_of_the_traced_tree(guarded: BastionEnv, work: Path, name: str, command: str,  # noqa: F811
                                       shows: str) -> None:
    f = keep(work)
    put(work, "clone.py", CLONE)
    out = run(guarded, f"cd {work} || exit 9; {command}")
    assert re.search(shows, out.stdout + out.stderr), f"{name}: {out}"
    assert f.read_text() == "keep me\n", f"{name}: the file is gone"


def test_nothing_outlives_the_session(guarded: BastionEnv, work: Path) -> None:  # noqa: F811
    """A daemonised process (setsid, nohup, disown, double fork), one that never forks or execs again (no ptrace
    event to stop it) and one held for a reviewer: all end with the session."""
    put(work, "beat.py", "import os, sys, time\nopen('beat.pid', 'w').write(str(os.getpid()))\n"
                         "while True:\n    time.sleep(0.05)\n")
    with shell(guarded) as t:
        t.wait_for(PROMPT, 30)
        typed(t, f"cd {work}")
        typed(t, "(setsid nohup sh -c 'echo $$ > daemon.pid; exec sleep 300' >/dev/null 2>&1 &)")
        typed(t, "setsid nohup python3 beat.py >/dev/null 2>&1 & disown")
        typed(t, f"chmod 600 {work}/held & echo held=$!")
        t.wait_for_raw(HELD, 30)
        pids = []
        for name in ("daemon.pid", "beat.pid"):
            deadline = time.monotonic() + 20
            while not (work / name).exists() or not (work / name).read_text().strip():
                assert time.monotonic() < deadline, f"no {name}"
                time.sleep(0.05)
            pids.append(int((work / name).read_text()))
        m = re.search(r"held=(\d+)", t.raw_text())
        assert m
        pids.append(int(m.group(1)))
        t.send("exit\r")
        t.wait_exit(30)
    for pid in pids:
        wait_gone(pid)


# ---------------------------------------------------------------------------- running a program unjudged

MEMFD = """
import os, sys
program, *args = sys.argv[1:]
fd = os.memfd_create("x")
os.write(fd, open(program, "rb").read())
os.execve(fd, ["x", *args], dict(os.environ))  # fexecve: execveat(fd, "", AT_EMPTY_PATH)
"""
EXECVEAT = """
import os, sys
os.execve(os.open(sys.argv[1], os.O_RDONLY), ["x", *sys.argv[2:]], dict(os.environ))  # execveat on the file
"""

NO_EXEC = [  # (name, command, what the output must show); the file f must stay
    ("loader", f"{LOADER} /bin/rm f", LOADER_BLOCKED),
    ("loader-copy", f"cp {LOADER} ./l && ./l /bin/rm f", LOADER_BLOCKED),
    ("loader-symlink", f"ln -s {LOADER} ./ls && ./ls /bin/rm f", LOADER_BLOCKED),
    ("loader-shebang", f"printf '#!{LOADER} /bin/rm\\n' > s && chmod +x s && ./s f", LOADER_BLOCKED),
    ("memfd-fexecve", "python3 memfd.py /bin/rm f", BLOCKED),
    ("execveat", "python3 execveat.py /bin/rm f", BLOCKED),
    ("proc-self-fd", "exec 3</bin/rm; /proc/self/fd/3 f", BLOCKED),
    ("renamed-interpreter", "cp \"$(command -v python3)\" ./p && ./p -c 'import os; os.execv(\"/bin/rm\", "
                            "[\"rm\", \"f\"])'", BLOCKED),
    ("argv0-ls", "(exec -a ls /bin/rm f)", BLOCKED),
    ("argv0-only-adds-a-name", "(exec -a rm /bin/true)", BLOCKED),  # true run as "rm" answers to rm's rule
    ("shebang-to-a-copy", "cp /bin/rm ./r && printf '#!%s/r\\n' \"$PWD\" > f && chmod +x f && ./f", BLOCKED),
    ("hard-link", "ln /bin/rm ./h && ./h f", r"Operation not permitted|" + BLOCKED),
    ("bind-mount-in-a-mount-namespace", "unshare -rm sh -c 'mount --bind /usr/bin/rm /usr/bin/ls && ls f'", BLOCKED),
    ("binfmt-misc", "echo ':x:E::y::/bin/rm:' > /proc/sys/fs/binfmt_misc/register", r"denied|No such file"),
]
NEEDS.update({"bind-mount-in-a-mount-namespace": NEEDS_USERNS})
for _row in NO_EXEC[:4]:
    NEEDS[_row[0]] = pytest.mark.skipif(not LOADER, reason="no ld-linux loader")


@pytest.mark.parametrize(("name", "command", "shows"), _rows(NO_EXEC))
def test_every_program_is_judged_as_the_file_that_runs(guarded: BastionEnv, work: Path, name: str,  # noqa: F811
                                                       command: str, shows: str) -> None:
    f = keep(work)
    put(work, "memfd.py", MEMFD)
    put(work, "execveat.py", EXECVEAT)
    out = run(guarded, f"cd {work} || exit 9; {command}")
    assert re.search(shows, out.stdout + out.stderr), f"{name}: {out}"
    assert f.exists(), f"{name}: the file is gone"


def test_a_cached_copy_rewritten_in_place_is_judged_again(guarded: BastionEnv, work: Path) -> None:  # noqa: F811
    """A copy of true is allowed and its verdict cached; rewritten in place (one byte, the mtime set back) it is
    another program: held as unknown, not run from the cache."""
    with shell(guarded) as t:
        t.wait_for(PROMPT, 30)
        typed(t, f"cd {work} && cp /bin/true x && ./x && ./x && echo ran-$?")
        typed(t, "m=$(stat -c %y x); python3 -c 'f = open(\"x\", \"r+b\"); f.seek(-1, 2); b = f.read(1); "
                 "f.seek(-1, 2); f.write(bytes([b[0] ^ 1]))'; touch -d \"$m\" x")
        t.send("./x; echo second-$?\r")
        t.wait_for_raw(r"rule guard-unknown-program", 30)
        t.send("\x03")
        t.wait_for_raw(r"second-137", 30)
        t.send("exit\r")
        t.wait_exit(30)


FLIP_LAST_BYTE = ("python3 -c 'import sys; f = open(sys.argv[1], \"r+b\"); f.seek(-1, 2); b = f.read(1); "
                  "f.seek(-1, 2); f.write(bytes([b[0] ^ 1]))'")
UNKNOWN = [  # neither a system program nor a copy of one: held for a reviewer, withdrawn here
    ("copy-of-rm-one-byte-changed", f"cp /bin/rm ./y && {FLIP_LAST_BYTE} y && ./y f"),
    ("memfd-one-byte-changed", f"cp /bin/rm ./y && {FLIP_LAST_BYTE} y && python3 memfd.py ./y f"),
]


@pytest.mark.parametrize(("name", "command"), UNKNOWN, ids=[u[0] for u in UNKNOWN])
def test_an_unknown_program_waits_for_a_reviewer(guarded: BastionEnv, work: Path, name: str,  # noqa: F811
                                                 command: str) -> None:
    f = keep(work)
    put(work, "memfd.py", MEMFD)
    with shell(guarded) as t:
        t.wait_for(PROMPT, 30)
        typed(t, f"cd {work}")
        t.send(f"{command}; echo rc=$?\r")
        t.wait_for_raw(r"rule guard-unknown-program", 30)
        t.send("\x03")
        t.wait_for_raw(r"withdrawn", 30)
        # killed, never run; whether bash then runs `echo rc` depends on whether the Ctrl-C's SIGINT or the
        # withdrawal's SIGKILL ended it first (bash abandons the list after a SIGINT): the shell is back either way
        t.send("echo back-$((40+2))\r")
        t.wait_for_raw(r"back-42", 30)
        t.send("exit\r")
        t.wait_exit(30)
    assert f.exists(), name


HARMLESS = [  # (name, command, what stdout must show): the same mechanisms, used for work
    ("setsid", "setsid -w sh -c 'echo ok'", "ok"),  # without -w it forks, returns, and the session ends
    ("nohup", "nohup echo ok 2>/dev/null", "ok"),
    ("script", "script -qc 'echo ok' /dev/null", "ok"),
    ("double-fork", "(setsid sh -c 'echo ok > o.tmp && mv o.tmp out' &); " + until("out") + "; cat out", "ok"),
    ("tmux", "tmux -S ./t.sock new -d 'echo ok > o.tmp && mv o.tmp out'; " + until("out")
             + "; tmux -S ./t.sock kill-server; cat out", "ok"),
    ("user-namespace", "unshare -r id -u", "0"),
    ("copy-of-a-program", "cp /bin/echo ./e && ./e ok", "ok"),
    ("memfd-echo", "python3 memfd.py /bin/echo ok", "ok"),
    ("proc-self-fd", "exec 3</bin/echo; /proc/self/fd/3 ok", "ok"),
    ("argv0", "(exec -a hello /bin/echo ok)", "ok"),
    ("renamed-python", "cp \"$(command -v python3)\" ./p && ./p -c 'print(\"ok\")'", "ok"),
    ("pipeline", "printf 'b\\na\\n' | sort | head -1", "a"),
    ("script-file", "printf 'echo ok\\n' > s.sh && bash s.sh", "ok"),
    ("python-script", "printf 'import pathlib\\npathlib.Path(\"o\").write_text(\"ok\")\\nprint(open(\"o\").read())\\n'"
                      " > p.py && python3 p.py", "ok"),
    ("git", "git init -q r && cd r && git -c user.email=a@b -c user.name=a commit -q --allow-empty -m x && "
            "git log --oneline | wc -l", "1"),
    ("stop-own-job", "sleep 30 & kill -STOP $! && kill -CONT $! && kill $!; wait $!; echo ok", "ok"),
    ("large-argv", "/bin/echo $(head -c 500000 /dev/zero | tr '\\0' a | fold -w 1000) | wc -c", "500500"),
    ("non-utf8-name", "touch $'caf\\xe9' && ls | grep -c caf", "1"),
]
NEEDS.update({"tmux": NEEDS["tmux-server"]})


@pytest.mark.parametrize(("name", "command", "shows"), _rows(HARMLESS))
def test_harmless_work_with_the_same_mechanisms(guarded: BastionEnv, work: Path, name: str,  # noqa: F811
                                                command: str, shows: str) -> None:
    put(work, "memfd.py", MEMFD)
    put(work, "execveat.py", EXECVEAT)
    out = run_bytes(guarded, f"cd {work} || exit 9; {command}")
    assert out.returncode == 0 and shows.encode() in out.stdout, f"{name}: {out}"
    assert b"bastion:" not in out.stderr, f"{name}: {out}"


def test_job_control_and_vim_at_a_guarded_prompt(guarded: BastionEnv, work: Path) -> None:  # noqa: F811
    with shell(guarded) as t:
        t.wait_for(PROMPT, 30)
        typed(t, f"cd {work}")
        t.send("sleep 300\r")
        t.wait_for_raw(r"sleep 300\r\n")
        t.send("\x1a")  # Ctrl-Z
        t.wait_for(r"Stopped\s+sleep 300", 30)
        t.send("fg\r")
        t.wait_for_raw(r"fg\r\n[^\n]*sleep 300", 30)
        t.send("\x03")
        typed(t, "echo back-$((1+1))")
        t.wait_for_raw(r"back-2")
        if shutil.which("vim"):
            t.send("TERM=vt100 vim -Nu NONE -i NONE notes.txt\r")  # the test's screen (pyte) cannot parse xterm vim
            t.wait_for(r"notes\.txt", 30)
            t.send("iwritten in vim\x1b:wq\r")
            notes = work / "notes.txt"
            deadline = time.monotonic() + 30
            while not notes.exists() or notes.read_text() != "written in vim\n":
                assert time.monotonic() < deadline, t.screen_text()
                time.sleep(0.05)
            typed(t, "echo after-vim")
        t.send("exit\r")
        t.wait_exit(30)


# -------------------------------------------------------------------------------------- attacking the guard

def test_the_session_cannot_stop_its_guard_or_sshd(guarded: BastionEnv, work: Path) -> None:  # noqa: F811
    """A stopped guard judges nothing and ends nothing; a stopped sshd freezes its channel. Both are refused."""
    sshd = "$(awk '/^PPid/ {print $2}' /proc/$PPID/status)"
    everyone = "kill -STOP -1; echo all=$?; " if OWN_USER else ""
    out = run(guarded, f"kill -STOP $PPID; echo guard=$?; kill -STOP {sshd}; echo sshd=$?; "
                       f"kill -TSTP -$(ps -o pgid= -p $PPID | tr -d ' '); echo group=$?; {everyone}"
                       "python3 -c 'import os, signal; signal.pidfd_send_signal(os.pidfd_open(os.getppid()), "
                       "signal.SIGSTOP)' 2>/dev/null; echo pidfd=$?; echo alive")
    assert out.returncode == 0, out
    for line in ("guard=1", "sshd=1", "group=1", "pidfd=1", "alive") + (("all=1",) if OWN_USER else ()):
        assert line in out.stdout.splitlines(), (line, out)


def test_killing_the_guard_from_inside_ends_everything(guarded: BastionEnv, work: Path) -> None:  # noqa: F811
    with shell(guarded) as t:
        t.wait_for(PROMPT, 30)
        typed(t, "sleep 300 & echo bg=$!")
        m = re.search(r"bg=(\d+)", t.raw_text())
        assert m
        t.send("kill -9 $PPID\r")
        t.wait_exit(30)
    wait_gone(int(m.group(1)))


PEEK = """
import ctypes, os, sys
guard = int(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
def attempt(name, call):
    try:
        call()
        print(name, "ok")
    except OSError as e:
        print(name, e.errno)
def ptrace():
    if libc.ptrace(16, guard, 0, 0) != 0:  # PTRACE_ATTACH
        raise OSError(ctypes.get_errno(), "ptrace")
attempt("ptrace", ptrace)
attempt("mem", lambda: open(f"/proc/{guard}/mem", "rb").read(1))
attempt("environ", lambda: open(f"/proc/{guard}/environ", "rb").read())
attempt("fd-list", lambda: os.listdir(f"/proc/{guard}/fd"))
attempt("fd-open", lambda: open(f"/proc/{guard}/fd/1", "wb"))
def getfd():
    if libc.syscall(438, os.pidfd_open(guard), 1, 0) < 0:  # pidfd_getfd: the guard's fd 1, the channel
        raise OSError(ctypes.get_errno(), "pidfd_getfd")
attempt("pidfd-getfd", getfd)
"""


def test_the_guard_cannot_be_traced_or_read(guarded: BastionEnv, work: Path) -> None:  # noqa: F811
    """The guard is not dumpable: the session (same user) cannot attach to it, read its memory or environment, or
    reach the SSH channel through its file descriptors."""
    put(work, "peek.py", PEEK)
    out = run(guarded, f"cd {work} && python3 peek.py $PPID; strace -p $PPID -o /dev/null 2>&1 | head -1")
    lines = out.stdout.splitlines()
    assert lines[:6] == ["ptrace 1", "mem 13", "environ 13", "fd-list 13", "fd-open 13", "pidfd-getfd 1"], out
    assert "Operation not permitted" in out.stdout, out


def test_bytes_that_look_like_frames_are_only_output(guarded: BastionEnv, work: Path) -> None:  # noqa: F811
    """The session writes to its pty or pipes, never to the channel: a verdict, an exec report or an end of session
    printed by the session reach the operator as bytes and the daemon does not act on them."""
    forged = (b'X\x00\x00\x00\x3b{"id":999,"exe":"/usr/bin/forged","argv":["forged"],"first":true}'
              b'V\x00\x00\x00\x1d{"id":1,"allow":true,"cache":1}Q\x00\x00\x00\x02{}')
    put(work, "frames", "").write_bytes(forged)
    put(work, "rm.sh", "rm f\n")
    out = run_bytes(guarded, f"cd {work} && cat frames && bash rm.sh; echo after-frames-$((6*7))")
    assert forged in out.stdout and b"after-frames-42" in out.stdout, out
    assert b"blocked by rule 'no-rm'" in out.stderr
    marks = markers_of(guarded, "after-frames-")
    assert not any("forged" in m for m in marks), marks


def test_an_argv_too_large_to_report_is_killed_unjudged(guarded: BastionEnv, work: Path) -> None:  # noqa: F811
    """Over 1 MiB of argv does not fit a frame: the exec is killed, not run unjudged (a notice says so)."""
    f = keep(work)
    put(work, "big.sh", "rm f $(head -c 1100000 /dev/zero | tr '\\0' a | fold -w 1000)\necho rc=$?\n")
    out = run(guarded, f"cd {work} && bash big.sh && echo huge-argv")
    assert "rc=137" in out.stdout, out
    assert f.exists()
    assert any("exceeds the frame limit; killed" in m for m in markers_of(guarded, "huge-argv"))


def test_undecodable_and_drawing_argv_is_run_and_shown_written_out(guarded: BastionEnv, work: Path) -> None:  # noqa: F811
    """An argv that is not UTF-8 runs as it is; the recording's marker writes the byte out. An argv with a
    carriage return, an erase-line escape and a newline is written out too: no marker is forged or hidden."""
    out = run_bytes(guarded, f"cd {work} && /bin/echo $'caf\\xe9' && /bin/echo $'x\\r\\x1b[2Kexec: y\\nz' "
                             "&& echo undecodable-marker")
    assert out.returncode == 0 and out.stdout.startswith(b"caf\xe9\nx\r\x1b[2Kexec: y\nz\n"), out
    marks = [m for m in markers_of(guarded, "undecodable-marker") if m.startswith("exec: ")]
    assert any(m.startswith("exec: /usr/bin/echo /bin/echo $'caf\\xe9'") for m in marks), marks
    assert any("/bin/echo $'x\\r\\x1b[2Kexec: y\\nz'" in m for m in marks), marks
    assert all(m.isprintable() for m in marks), marks
    put(work, "rm.sh", "rm $'f\\r\\x1b[2Kls'\n")
    out = run_bytes(guarded, f"cd {work} && bash rm.sh")  # the operator's message on a refusal
    said = [line for line in out.stderr.split(b"\n") if line.startswith(b"bastion:")]  # (bash's own line is raw)
    assert len(said) == 1 and b"(exec: /usr/bin/rm rm $'f\\r\\x1b[2Kls'" in said[0], out
    assert said[0].decode().isprintable(), out


def test_a_reviewer_sees_a_drawing_argv_written_out(guarded: BastionEnv, work: Path) -> None:  # noqa: F811
    """A held chmod whose argument would erase its line and draw another command: the reviewer's queue shows the
    escapes as text; the denial reaches the operator; nothing ran."""
    f = keep(work)
    f.chmod(0o644)
    sneaky = f"{f}\\r\\x1b[2Kchmod 600 {work}/harmless"
    with shell(guarded) as alice:
        alice.wait_for(PROMPT, 30)
        alice.send(f"chmod 777 $'{sneaky}' {f}\r")
        alice.wait_for_raw(HELD, 30)
        with Terminal(ssh_argv(guarded.keys["bob"], guarded.port, "bob", tty=True), cols=200, rows=30) as bob:
            bob.wait_for(r"roles: .*reviewers", 30)
            bob.send_key("f2")
            bob.wait_for(r"chmod 777 \$'/tmp/bg\S*\\r\\x1b\[2K", 30)
            bob.send("d")
            bob.wait_for(r"why\?", 30)
            bob.send("no\r")
            alice.wait_for_raw(r"denied", 30)
        assert "\x1b[2Kchmod" not in alice.raw_text()
        alice.send("exit\r")
        alice.wait_exit(30)
    assert f.stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------------------------------- approvals

@pytest.mark.parametrize("how", ["ctrl-c", "hang-up"])
def test_a_held_program_withdrawn_never_runs(guarded: BastionEnv, work: Path, how: str) -> None:  # noqa: F811
    """Ctrl-C, or the operator hanging up: the request is withdrawn (as for a held command line), the program
    killed before it ran."""
    f = keep(work)
    f.chmod(0o644)
    with shell(guarded) as t:
        t.wait_for(PROMPT, 30)
        typed(t, f"cd {work}")
        t.send(f"chmod 600 {f}; echo rc=$?\r")
        t.wait_for_raw(HELD, 30)
        (held,) = pids_of(b"chmod\x00600\x00" + str(f).encode() + b"\x00")
        approvals = ApprovalStore(Store(load_config(guarded.config).database_url))
        rid = max(r.id for r in approvals.pending() if r.requester == "alice" and str(f) in r.text)
        if how == "ctrl-c":
            t.send("\x03")
            t.wait_for_raw(r"withdrawn", 30)
            t.wait_for_raw(r"rc=137", 30)
            t.send("exit\r")
            t.wait_exit(30)
    wait_gone(held)
    assert f.stat().st_mode & 0o777 == 0o644
    deadline = time.monotonic() + 20
    while approvals.get(rid).status == "pending":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert approvals.get(rid).status == "withdrawn", approvals.get(rid)


SWAP = """
import ctypes, os, sys, time
target = sys.argv[1].encode()


def swap(pid, start):  # chmod 600 -> chmod 777, over the argv on the held process's stack
    if sys.argv[2] == "proc-mem":
        with open(f"/proc/{pid}/mem", "r+b") as mem:
            mem.seek(start)
            mem.write(b"chmod\\x00777")
        return
    data = ctypes.create_string_buffer(b"chmod\\x00777", 9)
    local = (ctypes.c_void_p * 2)(ctypes.addressof(data), 9)
    remote = (ctypes.c_void_p * 2)(start, 9)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.process_vm_writev.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p,
                                       ctypes.c_ulong, ctypes.c_ulong]
    if libc.process_vm_writev(pid, local, 1, remote, 1, 0) != 9:
        raise OSError(ctypes.get_errno(), "process_vm_writev")


deadline = time.monotonic() + 60
while not os.path.exists("go"):  # the request is in the reviewers' queue: what they see is settled
    time.sleep(0.02)
while time.monotonic() < deadline:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if cmdline == b"chmod\\x00600\\x00" + target + b"\\x00" and state == "t":  # held by the guard
            start = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[45])  # arg_start
            try:
                swap(int(pid), start)
            except OSError as e:
                print("refused", e, flush=True)  # were it refused, what the reviewer approved would run
                sys.exit(0)
            print("swapped", pid, flush=True)
            sys.exit(0)
    time.sleep(0.02)
"""


@pytest.mark.xfail(strict=True, reason="HOLE: any process of the session (same user; the held program is dumpable) "
                   "can write a held program's memory through /proc/PID/mem (dd seek= does it, no interpreter "
                   "needed): the argv a reviewer approved is not the argv that runs. Closing it needs the session's "
                   "processes made non-dumpable or /proc/*/mem writes refused (Landlock), not an exec-time check")
@pytest.mark.parametrize("how", ["proc-mem", "process_vm_writev"])
def test_a_held_programs_argv_cannot_be_swapped_before_approval(guarded: BastionEnv, work: Path,  # noqa: F811
                                                                how: str) -> None:
    f = keep(work)
    f.chmod(0o644)
    put(work, "swap.py", SWAP)
    with shell(guarded) as alice:
        alice.wait_for(PROMPT, 30)
        typed(alice, f"cd {work} && python3 swap.py {f} {how} > swapped &")
        alice.send(f"chmod 600 {f}; echo chmod-done\r")
        alice.wait_for_raw(HELD, 30)
        put(work, "go", "")
        deadline = time.monotonic() + 30
        while not re.search("swapped|refused", (work / "swapped").read_text()):
            assert time.monotonic() < deadline, "the held chmod was not found"
            time.sleep(0.05)
        with Terminal(ssh_argv(guarded.keys["bob"], guarded.port, "bob", tty=True), cols=160, rows=30) as bob:
            bob.wait_for(r"roles: .*reviewers", 30)
            bob.send_key("f2")
            bob.wait_for(rf"chmod 600 {f}", 30)
            shown = approve(bob)
            assert f"chmod 600 {f}" in shown  # what the reviewer approved
            alice.wait_for_raw(r"\nchmod-done", 30)  # its output, not the typed line
        alice.send("exit\r")
        alice.wait_exit(30)
    assert f.stat().st_mode & 0o777 == 0o600, oct(f.stat().st_mode)


def test_an_approved_command_does_not_approve_another_program(guarded: BastionEnv, work: Path) -> None:  # noqa: F811
    """The exec form's ``chmod 600 F && bash s.sh`` is approved; its chmod is not held a second time. A program
    of the operator's (a copy of rm with one byte changed) run by the script as ``exec -a chmod ./y 600 F`` has the
    approved name and arguments, but it is not the program the reviewer approved: it waits for a reviewer."""
    f = keep(work)
    put(work, "s.sh", f"cp /bin/rm ./y && {FLIP_LAST_BYTE} y && exec -a chmod ./y 600 {f}\n")
    proc = subprocess.Popen(ssh_argv(guarded.keys["alice"], guarded.port, "alice", "web-guarded", "--",
                                     f"cd {work} && chmod 600 {f} && bash s.sh", tty=False),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert "waiting for approval" in proc.stderr.readline()
        with Terminal(ssh_argv(guarded.keys["bob"], guarded.port, "bob", tty=True), cols=160, rows=30) as bob:
            bob.wait_for(r"roles: .*reviewers", 30)
            bob.send_key("f2")
            bob.wait_for(rf"cd {work} && chmod 600 {f}", 30)
            approve(bob)
            bob.wait_for(rf"{work}/y chmod 600 {f}", 30)  # the copy waits in the queue: not run as approved
            assert f.stat().st_mode & 0o777 == 0o600  # the approved chmod ran
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert f.exists()


# ----------------------------------------------------------------------------------------- holes left open

@pytest.fixture()
def startup_files() -> Iterator[Path]:
    """The login user's home, its startup files put back as they were after the test."""
    h = home()
    saved = {p: p.read_bytes() for p in (h / ".bashrc", h / ".profile") if p.exists()}
    ssh_existed = (h / ".ssh").exists()
    try:
        yield h
    finally:
        for p, data in saved.items():
            p.write_bytes(data)
        (h / ".ssh" / "rc").unlink(missing_ok=True)
        if not ssh_existed and (h / ".ssh").exists():
            shutil.rmtree(h / ".ssh")


BEFORE_THE_GUARD = [
    ("bashrc", "printf 'rm -f {f}\\n' | cat - ~/.bashrc > ~/.bashrc.new && mv ~/.bashrc.new ~/.bashrc"),
    ("ssh-rc", "mkdir -p ~/.ssh && printf 'rm -f {f}\\n' > ~/.ssh/rc"),
]


@pytest.mark.xfail(strict=True, reason="HOLE (deployment): sshd runs ~/.ssh/rc, and bash (the login shell sshd "
                   "starts the guard with: $SHELL -c 'bastion-guard ...') sources ~/.bashrc when run by sshd, "
                   "before the guard exists; the session can write both, so the next session runs anything "
                   "unjudged and unrecorded, even a fake guard that speaks the protocol. The guard cannot see what "
                   "ran before it: the target must keep them out of the login user's reach (root-owned home "
                   "startup files and ~/.ssh, PermitUserRC no, AuthorizedKeysFile outside the home, or a login "
                   "shell that sources nothing for -c)")
@pytest.mark.parametrize(("name", "plant"), BEFORE_THE_GUARD, ids=[b[0] for b in BEFORE_THE_GUARD])
def test_a_session_cannot_plant_what_runs_before_the_next_guard(guarded: BastionEnv, work: Path,  # noqa: F811
                                                                startup_files: Path, name: str, plant: str) -> None:
    f = keep(work)
    put(work, "plant.sh", plant.format(f=f) + "\n")  # as typed at a guarded prompt, where no line is judged
    out = run(guarded, f"bash {work}/plant.sh")
    assert out.returncode == 0, out
    assert f.exists()  # planting ran no rm
    run(guarded, "true")  # the next session, anyone's
    assert f.exists(), f"{name}: the next session deleted the file before its guard started"


SHELLCODE = (  # x86_64: unlink("f"); exit(0) -- written over a sleeping program's next instruction
    b"\x48\x8d\x3d\x10\x00\x00\x00"  # lea rdi, [rip+16] -> "f"
    b"\xb8\x57\x00\x00\x00\x0f\x05"  # mov eax, 87 (unlink); syscall
    b"\xb8\x3c\x00\x00\x00\x31\xff\x0f\x05"  # mov eax, 60 (exit); xor edi, edi; syscall
    b"f\x00"
)
NATIVE = [
    ("bash-enable-f", "enable -f ./evil.so evil", "gcc"),
    ("proc-mem-dd", "sleep 2 & p=$!; until read -r nr rest < /proc/$p/syscall && [ \"$nr\" = 230 ]; do :; done; "
                    "set -- $rest; dd if=code of=/proc/$p/mem bs=1 seek=$((${!#})) conv=notrunc status=none "
                    "|| echo dd-refused; wait $p", "x86_64"),
]


@pytest.mark.xfail(strict=True, reason="HOLE (class): native code of the operator's making runs inside a program the "
                   "guard allowed, without an exec: bash's own `enable -f` in the login shell, bytes written over a "
                   "running program's code through "
                   "/proc/PID/mem with dd. The guard judges programs, not what they load; closing the class needs "
                   "the target: user-writable filesystems mounted noexec, vm.memfd_noexec=2, /proc/PID/mem writes "
                   "refused (proc_mem.force_override=never does not cover writable pages)")
@pytest.mark.parametrize(("name", "command", "needs"), NATIVE, ids=[n[0] for n in NATIVE])
def test_no_native_code_runs_inside_an_allowed_program(guarded: BastionEnv, work: Path, name: str,  # noqa: F811
                                                       command: str, needs: str) -> None:
    native(guarded, work, name, command, needs)


LOADER_VARIABLES = ["LD_PRELOAD=./evil.so /bin/true", "LD_AUDIT=./evil.so /bin/true",
                    "mkdir -p lib && cp evil.so lib/libc.so.6 && LD_LIBRARY_PATH=./lib /bin/true",
                    "export LD_PRELOAD=$PWD/evil.so; /bin/true", "env LD_PRELOAD=./evil.so /bin/true"]


@pytest.mark.parametrize("command", LOADER_VARIABLES)
def test_a_loader_variable_the_session_set_gets_the_strictest_action(guarded: BastionEnv, work: Path,  # noqa: F811
                                                                     command: str) -> None:
    """LD_PRELOAD and its kind map the operator's code into an allowed program without an exec: the guard
    reports which variables the session set (by name) and the daemon refuses the program (rule guard-loader)."""
    out = native(guarded, work, "loader", command, "gcc")
    assert "blocked by rule 'guard-loader'" in out.stderr, out


def native(env: BastionEnv, where: Path, name: str, command: str, needs: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` from a script in ``where`` next to the operator's evil.so (or shellcode); the file ``f`` must
    stay."""
    if needs == "gcc":
        if not shutil.which("gcc"):
            pytest.skip("no compiler to make the operator's library with")
        src = put(where, "evil.c", '#include <unistd.h>\n__attribute__((constructor)) static void go(void) '
                                  '{ unlink("f"); }\nint evil_builtin_load(char *s) { return 0; }\n')
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(where / "evil.so"), str(src)], check=True)
        own(where / "evil.so")  # bytes the operator could as well have written with printf
    elif os.uname().machine != needs:
        pytest.skip(f"the shellcode is for {needs}")
    else:
        put(where, "code", "").write_bytes(SHELLCODE)
    f = keep(where)
    put(where, "native.sh", command + "\n")  # a script: the exec form's line is not what is probed here
    out = run(env, f"cd {where} && bash native.sh")
    if "dd-refused" in out.stdout:
        pytest.skip("this kernel refuses forced writes to /proc/PID/mem")
    assert f.exists(), f"{name}: the file is gone ({out})"
    return out


@pytest.mark.xfail(strict=True, reason="HOLE (limit): another session of the same login user may stop this "
                   "session's guard (the seccomp filter protects a session's own guard and sshd, which it knows; "
                   "not every other session's). What this session already runs then outlives it. Closing it needs "
                   "the guard out of the user's reach (another uid), or the daemon killing a guard that stops "
                   "answering through its own connection to the target")
def test_another_session_cannot_stop_this_sessions_guard(guarded: BastionEnv, work: Path) -> None:  # noqa: F811
    put(work, "beat.py", "import os, time\nopen('beat.pid', 'w').write(str(os.getpid()))\nwhile True:\n"
                         "    open('beat', 'w').write(str(time.monotonic()))\n    time.sleep(0.05)\n")
    guard_pid = 0
    try:
        with shell(guarded) as a:
            a.wait_for(PROMPT, 30)
            typed(a, f"cd {work} && echo guard=$PPID")
            guard_pid = int(re.findall(r"guard=(\d+)", a.raw_text())[-1])
            typed(a, "python3 beat.py & echo beat=$!")
            beat = int(re.findall(r"beat=(\d+)", a.raw_text())[-1])
            run(guarded, f"kill -STOP {guard_pid}")  # session B (were it refused, A would end as it should)
        wait_gone(beat, timeout=5)
    finally:
        if guard_pid:
            try:
                os.kill(guard_pid, signal.SIGKILL)  # the stopped guard, and with it what it traced
            except ProcessLookupError:
                pass
