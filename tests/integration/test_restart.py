"""A daemon killed with requests pending: on restart they are cancelled with an audit event, sessions marked."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from bastion.config import load_config
from bastion.store.approvals import ApprovalStore
from bastion.store.db import Store
from tests.integration.conftest import BastionEnv, start_bastion, stop_bastion, write_config
from tests.support.keys import free_port
from tests.support.ssh_client import ssh_argv

pytestmark = pytest.mark.slow


def test_pending_requests_cancelled_and_sessions_interrupted_after_kill(tmp_path: Path,
                                                                       bastion_env: BastionEnv) -> None:
    env = bastion_env
    (tmp_path / "state").mkdir()
    port = free_port()
    cfg = write_config(tmp_path, port, env.keys, env.target, env.target_key)
    log = tmp_path / "out.log"
    proc = start_bastion(cfg, port, log)
    store = Store(load_config(cfg).database_url)
    waiting = subprocess.Popen(ssh_argv(env.keys["alice"], port, "alice", "web", "--", "chmod 600 /nonexistent",
                                        tty=False), stderr=subprocess.PIPE, text=True)
    running = subprocess.Popen(ssh_argv(env.keys["alice"], port, "alice", "web", "--", "sleep 60", tty=False))
    try:
        assert waiting.stderr is not None
        assert "waiting for approval" in waiting.stderr.readline()
        deadline = time.monotonic() + 10
        while not any(s.outcome == "active" for s in store.sessions()) and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert waiting.wait(30) != 0 and running.wait(30) != 0
        proc = start_bastion(cfg, port, log)
        reqs = ApprovalStore(store).recent(requester="alice")
        assert reqs[0].status == "cancelled" and "restarted" in reqs[0].status_reason
        assert any(e.action == "approval.cancelled" for e in store.audit_events())
        sleeper = next(s for s in store.sessions() if s.command == "sleep 60")
        assert sleeper.outcome == "interrupted"
    finally:
        for p in (waiting, running):
            p.kill()
        stop_bastion(proc)
