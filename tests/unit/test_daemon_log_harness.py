"""The harness's JSON-log check (tests/support/daemon_log.py): which daemons it applies to, that a line which is not
a JSON object fails the check naming the file and the line, and that log readers find a message in either format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import daemon_log


def test_config_line_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(daemon_log.ENV, raising=False)
    assert daemon_log.config_line("") == ""
    monkeypatch.setenv(daemon_log.ENV, "json")
    assert daemon_log.config_line("") == "log_format: json\n"
    assert daemon_log.config_line("log_format: text\n") == ""  # a test that sets its own keeps it
    monkeypatch.setenv(daemon_log.ENV, "yaml")
    with pytest.raises(RuntimeError, match="text or json"):
        daemon_log.config_line("")


def test_json_logs_of_names_stderr_and_the_log_file(tmp_path: Path) -> None:
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text("listen: {host: 127.0.0.1, port: 2222}\nlog_dir: state/logs\nlog_format: json\n")
    assert daemon_log.json_logs_of(cfg, tmp_path / "out") == [tmp_path / "out", tmp_path / "state/logs/bastion.log"]
    cfg.write_text("listen: {host: 127.0.0.1, port: 2222}\nlog_dir: state/logs\n")
    assert daemon_log.json_logs_of(cfg, tmp_path / "out") == []  # text: nothing to check


def test_a_line_that_is_not_a_json_object_is_named(tmp_path: Path) -> None:
    good = json.dumps({"message": "listening on 127.0.0.1:2222"})
    log = tmp_path / "bastion.out"
    log.write_text(f"{good}\n{good}\n")
    daemon_log.check_json([log, tmp_path / "absent.log"])  # all JSON; a file never written is fine
    log.write_text(f'{good}\nTraceback (most recent call last):\n"a string"\n{good}\n')
    with pytest.raises(AssertionError) as e:
        daemon_log.check_json([log])
    assert "2 line(s) are not JSON objects" in str(e.value)
    assert f"{log}:2: Traceback (most recent call last):" in str(e.value) and f'{log}:3: "a string"' in str(e.value)


def test_messages_reads_either_format(tmp_path: Path) -> None:
    log = tmp_path / "bastion.out"
    log.write_text(json.dumps({"level": "warning", "message": 'refused "x"\tnow', "exception": "Traceback ..."})
                   + "\n2026-12-03 06:00:00,000 bastion.daemon INFO listening on 127.0.0.1:2222\n")
    text = daemon_log.messages(log)
    assert 'refused "x"\tnow\nTraceback ...' in text  # JSON escapes undone: the message as a test would write it
    assert "INFO listening on 127.0.0.1:2222" in text
