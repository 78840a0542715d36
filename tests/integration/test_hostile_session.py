"""A hostile session process: the TUI of alice's menu connection is taken over (stopped, its broker socket taken
with pidfd_getfd, as an attacker who got code execution in it could), and speaks to the daemon directly. Forged
and malformed requests are refused and logged, nothing is granted beyond alice's own rights, and the daemon goes
on serving everyone else."""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import socket
import struct
import subprocess
from pathlib import Path

import pytest

import tui.app
from tests.integration.conftest import BastionEnv
from tests.support.daemon_log import messages
from tests.support.procs import descendants, initial_env, status_field, wait_descendant
from tests.support.ssh_client import ssh_argv
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow
SYS_PIDFD_GETFD = 438


def tui_pid(daemon: int, before: set[int]) -> int:
    """The menu's Python process (inside its sandbox wrapper, if any): the one given the broker socket."""
    return wait_descendant(daemon, lambda pid: b"BASTION_RPC_FD" in initial_env(pid), before)


def steal_fd(pid: int, fd: int) -> socket.socket:
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        got = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if got < 0:
            raise OSError(ctypes.get_errno(), "pidfd_getfd")
        return socket.socket(fileno=got)
    finally:
        os.close(pidfd)


def rpc_fd(pid: int) -> int:
    """The session process's broker socket: the fd number the daemon gave it (in its initial environment)."""
    return int(initial_env(pid)[b"BASTION_RPC_FD"])


def ask(sock: socket.socket, raw: bytes) -> dict | None:
    """Send one request on the stolen socket and read its reply, skipping the daemon's pushes (``queue.changed``:
    alice's own request changes the queue). If the stopped process had read part of a push before it stopped, the
    stream is mid-frame: what is buffered is drained and the request sent again, once."""
    for attempt in (1, 2):
        try:
            sock.sendall(struct.pack(">I", len(raw)) + raw)
        except ConnectionError:  # the daemon already closed the channel (after a refused frame): no reply
            return None
        sock.settimeout(10)
        while True:
            try:
                (n,) = struct.unpack(">I", _exact(sock, 4))
            except (TimeoutError, ConnectionError):
                return None
            if n > 1 << 24 and attempt == 1:  # not a length: the middle of a frame the process began to read
                _drain(sock)
                break
            reply = json.loads(_exact(sock, n))
            if isinstance(reply, dict) and "event" in reply and "id" not in reply:
                continue  # a push, not our reply
            return reply
    return None


def _drain(sock: socket.socket) -> None:
    sock.settimeout(0.5)
    try:
        while sock.recv(65536):
            pass
    except (TimeoutError, BlockingIOError):
        pass


def _exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def test_taken_over_session_process_gets_nothing_more(bastion_env: BastionEnv) -> None:
    env = bastion_env
    held = subprocess.Popen(ssh_argv(env.keys["alice"], env.port, "alice", "web", "--", "chmod 600 /nonexistent",
                                     tty=False), stderr=subprocess.PIPE, text=True)  # alice's own pending request
    try:
        assert held.stderr is not None and "waiting for approval" in held.stderr.readline()
        before = set(descendants(env.proc.pid))
        with Terminal(ssh_argv(env.keys["alice"], env.port, "alice", tty=True), cols=100, rows=30) as t:
            t.wait_for(r"real sshd on loopback")
            pid = tui_pid(env.proc.pid, before)
            os.kill(pid, signal.SIGSTOP)  # its own reader thread must not take our replies
            try:
                sock = steal_fd(pid, rpc_fd(pid))
                log_start = env.log.stat().st_size
                hello = ask(sock, json.dumps({"id": 1, "method": "hello", "params": {}}).encode())
                assert hello is not None and hello["result"]["user"] == "alice"  # it is alice's channel, no more
                queue = ask(sock, b'{"id":2,"method":"queue.list","params":{}}')
                assert queue is not None and queue["error"]["code"] == "forbidden"
                mine = ask(sock, b'{"id":3,"method":"requests.mine","params":{}}')
                assert mine is not None
                rid = str(mine["result"]["requests"][0]["id"])
                forged = [  # (request, the error it must get)
                    ({"id": 4, "method": "request.decide", "params": {"id": rid, "decision": "approve",
                                                                      "reason": ""}}, {"forbidden", "refused"}),
                    ({"id": 5, "method": "request.decide", "params": {"id": rid, "decision": "approve"},
                      "as": "bob"}, {"bad_request"}),
                    ({"id": 6, "method": "hello", "params": {"user": "bob"}}, {"bad_request"}),
                    ({"id": 7, "method": "admin.grant", "params": {}}, {"bad_request"}),
                    ({"id": 8, "method": "sessions.live", "params": {}}, {"forbidden"}),
                    ({"id": 9, "method": "session.terminate", "params": {"id": "x", "reason": "r"}}, {"not_found"}),
                    ({"id": 10, "method": "recordings.list", "params": {}}, {"forbidden"}),
                    ({"id": 11, "method": "recording.play", "params": {"id": "x"}}, {"forbidden"}),
                    ({"id": 12, "method": "resource.open", "params": {"name": "secret-db"}}, None),
                ]
                for req, codes in forged:
                    reply = ask(sock, json.dumps(req).encode())
                    assert reply is not None, req
                    if codes is None:  # open of a resource alice may not use: refused like an unknown one
                        assert reply["result"]["ok"] is False and "not permitted" in reply["result"]["message"]
                    else:
                        assert reply.get("error", {}).get("code") in codes, (req, reply)
                fake = "x\n2026-11-30 bastion.oversight.approvals INFO request 1 approved by bob\x1b[2J"
                forged_log = {"id": 15, "method": "log", "params": {"level": "INFO", "message": fake}}
                assert ask(sock, json.dumps(forged_log).encode()) == {"id": 15, "result": None}
                bad_level = ask(sock, b'{"id":16,"method":"log","params":{"level":"AUDIT","message":"m"}}')
                assert bad_level is not None and bad_level["error"]["code"] == "bad_level"
                for garbage in (b"\xff\xfe{", b"[]", b'{"id":13}', b"{" * 5000):
                    reply = ask(sock, garbage)
                    assert reply is not None and reply["error"]["code"] == "bad_request"
                sock.sendall(struct.pack(">I", 10 * 1024 * 1024) + b"x")  # oversized: refused, channel closed
                (n,) = struct.unpack(">I", _exact(sock, 4))
                assert json.loads(_exact(sock, n))["error"]["code"] == "too_large"
                assert ask(sock, b'{"id":14,"method":"hello","params":{}}') is None
                sock.close()
            finally:
                os.kill(pid, signal.SIGKILL)
        raw = env.log.read_bytes()[log_start:].decode(errors="replace")
        log = messages(env.log, log_start)  # the messages, in either log format
        assert "refused malformed request" in log and "refused oversized frame" in log
        # its log line is written as alice's, marked, with no line of its own nor terminal escapes
        assert re.search(r"tui\[alice@[0-9.:]+\]: x\n    \| 2026-11-30 bastion.oversight.approvals INFO request 1 "
                         r"approved by bob"
                         r"\\x1b\[2J", log)
        assert "\x1b" not in raw
        # alice's request is still pending, undecided; everyone else is served as before
        still = subprocess.run(ssh_argv(env.keys["bob"], env.port, "bob", "web", "--", "echo fine", tty=False),
                               capture_output=True, text=True, timeout=60)
        assert held.poll() is None
        assert still.stdout == "" and "no such resource or not permitted" in still.stderr  # bob may not open web
        out = subprocess.run(ssh_argv(env.keys["alice"], env.port, "alice", "web", "--", "echo fine", tty=False),
                             capture_output=True, text=True, timeout=60)
        assert out.stdout == "fine\n"
    finally:
        held.kill()
        held.wait()


def test_menu_process_sees_none_of_the_daemons_files(bastion_env: BastionEnv) -> None:
    """What code execution in the menu would reach: no config, keys, credential, database or recordings; no
    network, no privileges; only its interpreter and packages, read-only. Its log lines still reach the daemon."""
    env = bastion_env
    repo = Path(__file__).resolve().parents[2]
    before = set(descendants(env.proc.pid))
    with Terminal(ssh_argv(env.keys["alice"], env.port, "alice", tty=True), cols=100, rows=30) as t:
        t.wait_for(r"real sshd on loopback")
        pid = tui_pid(env.proc.pid, before)
        root = Path(f"/proc/{pid}/root")
        secrets = [env.config, env.dir / "state" / "host_ed25519", env.dir / "state" / "bastion.db",
                   env.dir / "state" / "recordings", env.dir / "target_credential", env.log, repo / ".git",
                   repo / "tests", Path("/etc/ssh"), Path("/etc/shadow")]
        assert [p for p in secrets if p.exists()] == secrets  # they are there, outside
        assert [p for p in secrets if (root / p.relative_to("/")).exists()] == []  # and not in the menu's view
        assert (root / Path(tui.app.__file__).resolve().relative_to("/")).exists()  # its own code it may read
        if os.geteuid() == 0:
            assert status_field(pid, "Uid").split() == ["65534"] * 4
        assert status_field(pid, "CapEff") == "0" * 16 and status_field(pid, "CapBnd") == "0" * 16
        assert status_field(pid, "NoNewPrivs") == "1"
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
        log_start = env.log.stat().st_size
        t.send_key("enter")
        t.wait_for_raw(r"[#$] \Z")
        t.send("exit\r")
        t.wait_for(r"web: exited with status 0")
        t.send("q")
        assert t.wait_exit() == 0
    log = env.log.read_text()[log_start:]
    assert re.search(r"tui\[alice@[0-9.:]+\]: tui.app: opening web", log)
