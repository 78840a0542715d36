"""The house plan holds: modules of the daemon stay small enough to read at a sitting, functions short enough to
hold in one's head. (The layering is checked by ``lint-imports`` and the types by ``mypy``, both run by
scripts/test; see docs/architecture.md.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
MODULES = sorted(p for p in (ROOT / "bastion").rglob("*.py") if "migrations" not in p.parts)


def test_the_daemon_package_is_found() -> None:
    assert len(MODULES) > 50 and ROOT / "bastion" / "daemon.py" in MODULES


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_are_small(path: Path) -> None:
    text = path.read_text()
    lines = text.count("\n")
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {lines} lines: split it by what it does"
    long = [f"{node.name} (line {node.lineno}: {node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno is not None
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.relative_to(ROOT)}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"
