"""The harness's JSON-log check on a real daemon: one started by the harness with ``log_format: json`` writes only
JSON objects to its stderr and ``log_dir/bastion.log`` (stop_bastion checks both), and a line that is not one, in
either file, fails the stop naming it. (BASTION_TEST_LOG_FORMAT=json applies the same check to every daemon the
integration suites start.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import start_bastion, stop_bastion
from tests.support.daemon_log import messages
from tests.support.keys import free_port

pytestmark = pytest.mark.slow


def json_daemon_config(d: Path, processes: str) -> tuple[Path, int]:
    (d / "state").mkdir(parents=True)
    port = free_port()
    cfg = d / "bastion.yaml"
    cfg.write_text(f"listen: {{host: 127.0.0.1, port: {port}}}\nhost_keys: [state/host_ed25519]\n"
                   "database: sqlite:///state/bastion.db\nrecordings_dir: state/recordings\nlog_dir: state/logs\n"
                   f"log_format: json\nprocesses: {processes}\n")
    return cfg, port


@pytest.mark.parametrize(("where", "processes"), [("stderr", "per-connection"), ("log file", "one")])
def test_stop_fails_on_a_line_that_is_not_json(tmp_path: Path, where: str, processes: str) -> None:
    """Both process models apply the config's log_format from their first line (bastion serve's start)."""
    cfg, port = json_daemon_config(tmp_path, processes)
    out = tmp_path / "bastion.out"
    proc = start_bastion(cfg, port, out, timeout=60)
    stop_bastion(proc)  # a clean run: every line is JSON
    assert "listening on" in messages(out) and out.read_text().startswith("{")
    assert "listening on" in messages(tmp_path / "state/logs/bastion.log")

    proc = start_bastion(cfg, port, out, timeout=60)
    target = out if where == "stderr" else tmp_path / "state/logs/bastion.log"
    with target.open("a") as f:
        f.write("a stray line of plain text\n")
    with pytest.raises(AssertionError, match=r"not JSON objects:\n.*bastion\.(out|log):\d+: a stray line"):
        stop_bastion(proc)
    assert proc.poll() is not None  # stopped all the same
