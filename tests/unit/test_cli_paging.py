"""``bastion sessions list`` pages through the store too: each page prints the command for the next on stderr, and
following them lists every session once."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from bastion.store.db import Store
from tests.unit.test_menu_handlers import CONFIG
from tests.unit.test_recordings_paging import fill


def bastion(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion.cli", "--config", str(cfg), *args], capture_output=True,
                          text=True, timeout=60, cwd=cfg.parent)


def test_following_the_pages_lists_every_session_once(tmp_path: Path) -> None:
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text(CONFIG)
    store = Store(f"sqlite:///{tmp_path / 'bastion.db'}")
    store.migrate()
    ids = fill(store, 230)
    store.engine.dispose()
    seen: list[str] = []
    args = ["sessions", "list", "--json", "--limit", "100"]
    for _ in range(5):
        out = bastion(cfg, *args)
        assert out.returncode == 0, out.stderr
        seen += [s["id"] for s in json.loads(out.stdout)]
        m = re.search(r"more: bastion sessions list (--before .*)$", out.stderr, re.M)
        if m is None:
            break
        args = ["sessions", "list", "--json", "--limit", "100", *shlex.split(m.group(1))]
    assert seen == sorted(ids, reverse=True)
    bad = bastion(cfg, "sessions", "list", "--before", "yesterday")
    assert bad.returncode == 2 and "is not a cursor this command printed" in bad.stderr
