"""The CLI prints nothing of its dependencies: no warnings on stderr (what users see in every terminal and in the
daemon's journal)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

WARNING = re.compile(r"[A-Za-z]+Warning:")  # a Python warning line (log lines say WARNING)


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["audit", "--help"], ["sessions", "--help"]])
def test_help_has_an_empty_stderr(args: list[str]) -> None:
    out = subprocess.run([sys.executable, "-m", "bastion.cli", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("usage: bastion")
    assert out.stderr == ""


def test_the_daemon_and_the_session_process_import_no_deprecated_path() -> None:
    """What ``bastion serve`` and ``bastion demo`` import (the OIDC client among it), and the menu, warn of
    nothing even when every warning is shown."""
    code = "import bastion.daemon, bastion.demo.run, bastion.oidc.client, tui.app"
    out = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).parents[2])
    assert out.returncode == 0 and not WARNING.search(out.stderr), out.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["audit", "report", "--from", "xyz"],
     "bastion audit report: error: argument --from: 'xyz': give a date (2026-11-01, 2026-11-01T12:00) or an age "
     "(30m, 12h, 7d)"),
    (["audit", "search", "foo", "--since", "yesterday"],
     "bastion audit search: error: argument --since: 'yesterday': give a date"),
    (["replay", "x", "--from", "1:2:3:4"],
     "bastion replay: error: argument --from: '1:2:3:4': give seconds (90) or [h:]m:ss (1:30)"),
    (["replay", "x", "--to", "-1"], "bastion replay: error: argument --to: '-1': give seconds (90)"),
])
def test_a_time_that_cannot_be_read_is_refused_with_what_to_give(args: list[str], message: str) -> None:
    """Dates and ages (bastion.store.when, shared with the menu's filter) and offsets: argparse shows their own
    message, not a generic 'invalid value'."""
    out = subprocess.run([sys.executable, "-m", "bastion.cli", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and message in out.stderr, out.stderr
