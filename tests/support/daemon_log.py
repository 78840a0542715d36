"""The daemons' logs in either format. ``BASTION_TEST_LOG_FORMAT=json`` runs every daemon the harness starts
(tests/integration/conftest.py) with ``log_format: json``; when such a daemon stops, every line it wrote (its stderr
and ``log_dir/bastion.log``) must be one JSON object, or the test fails naming the file, the line and its text.
Tests that look for a message in a log read it through :func:`messages`, which works in both formats."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml

ENV = "BASTION_TEST_LOG_FORMAT"


def wanted() -> str | None:
    """The log format asked of harness-started daemons (None: each config's own, text by default)."""
    value = os.environ.get(ENV, "").strip()
    if value and value not in ("text", "json"):
        raise RuntimeError(f"{ENV}={value!r}: text or json")
    return value or None


def config_line(extra_top: str) -> str:
    """The ``log_format`` line to add to a harness config (none when the test sets its own or nothing is asked)."""
    fmt = wanted()
    return f"log_format: {fmt}\n" if fmt and "log_format:" not in extra_top else ""


def json_logs_of(cfg: Path, stderr: Path) -> list[Path]:
    """The files a daemon started on ``cfg`` writes JSON lines to: its stderr and ``log_dir/bastion.log``; none
    when its config does not say ``log_format: json``."""
    text = cfg.read_text()
    if not re.search(r"^log_format:\s*json\s*$", text, re.M):
        return []
    doc = yaml.safe_load(text) or {}
    files = [stderr]
    if doc.get("log_dir"):
        log_dir = Path(doc["log_dir"])
        files.append((log_dir if log_dir.is_absolute() else cfg.parent / log_dir) / "bastion.log")
    return files


def not_json(path: Path) -> list[str]:
    """Each line of ``path`` that is not a JSON object, as ``path:N: text`` (an empty list when all are)."""
    if not path.exists():
        return []
    bad = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            ok = isinstance(json.loads(line), dict)
        except ValueError:
            ok = False
        if not ok:
            bad.append(f"{path}:{n}: {line[:300]}")
    return bad


def check_json(files: list[Path]) -> None:
    """Fail, naming the lines, when any line of ``files`` is not a JSON object."""
    bad = [b for f in files for b in not_json(f)]
    if bad:
        shown = "\n".join(bad[:20]) + (f"\n... and {len(bad) - 20} more" if len(bad) > 20 else "")
        raise AssertionError(f"log_format: json, but {len(bad)} line(s) are not JSON objects:\n{shown}")


def message_of(line: str) -> str:
    """The text of one log line: a JSON line's message (and its exception's traceback), else the line itself."""
    if line.startswith("{"):
        try:
            obj = json.loads(line)
        except ValueError:
            return line
        if isinstance(obj, dict) and "message" in obj:
            return "\n".join(str(obj[k]) for k in ("message", "exception") if obj.get(k))
    return line


def messages(path: Path, start: int = 0) -> str:
    """A daemon's log (from byte ``start``) as text to search, whatever its format: each JSON line becomes its
    message (the text a text-format line carries after its prefix), other lines stay as they are."""
    text = path.read_bytes()[start:].decode(errors="replace")
    return "\n".join(message_of(line) for line in text.splitlines())
