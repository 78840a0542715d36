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
