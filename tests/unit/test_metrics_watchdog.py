"""systemd's watchdog (``WatchdogSec=``): the daemon says ``WATCHDOG=1`` while its main loop turns, in both process
models, and nothing when systemd does not watch it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.keys import free_port


def notes_of(tmp_path: Path, processes: str, watchdog_usec: str | None) -> list[str]:
    """Start a daemon with a notify socket (and WATCHDOG_USEC), collect its datagrams for a while after READY=1."""
    (tmp_path / "state").mkdir()
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text(f"listen: {{host: 127.0.0.1, port: {free_port()}}}\nhost_keys: [state/host_ed25519]\n"
                   f"database: sqlite:///state/bastion.db\nrecordings_dir: state/recordings\nprocesses: {processes}\n")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(0.5)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BASTION", "WATCHDOG", "NOTIFY"))}
    env["NOTIFY_SOCKET"] = str(tmp_path / "notify.sock")
    if watchdog_usec is not None:
        env["WATCHDOG_USEC"] = watchdog_usec
    proc = subprocess.Popen([sys.executable, "-m", "bastion.cli", "serve", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    seen: list[str] = []
    try:
        deadline, ready_at = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            if ready_at is not None and time.monotonic() > ready_at + 5:  # 5 beats due; 3 asked (a loaded machine)
                break
            try:
                seen += sock.recv(4096).decode().split("\n")
            except TimeoutError:
                assert proc.poll() is None
                continue
            if ready_at is None and "READY=1" in seen:
                ready_at = time.monotonic()
        assert ready_at is not None, seen
        return seen[seen.index("READY=1"):]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        sock.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("processes", ["per-connection", "one"])
def test_the_watchdog_is_fed_while_the_loop_turns(tmp_path: Path, processes: str) -> None:
    after_ready = notes_of(tmp_path, processes, "2000000")  # WatchdogSec=2: a beat at least every second
    assert after_ready.count("WATCHDOG=1") >= 3, after_ready


@pytest.mark.timeout(120)
def test_no_watchdog_no_beats(tmp_path: Path) -> None:
    assert "WATCHDOG=1" not in notes_of(tmp_path, "per-connection", None)
