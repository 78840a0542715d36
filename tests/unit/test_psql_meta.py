"""The psql meta-command filter: the commands that leave SQL are refused, the rest (and all SQL) pass."""

from __future__ import annotations

import pytest

from policies.engine import Action
from policies.psql import RULE, judge_psql_line


@pytest.mark.parametrize("line", [
    "\\! id", "\\!id", "  \\! env", "SELECT 1 \\g |cat", "\\g|sh", "SELECT 1 \\gx | sh", "\\o |nc -l 9",
    "\\out | tee x", "\\w |sh", "\\copy customers to program 'cat'", "\\copy t from PROGRAM 'id'",
    "\\c postgres", "\\connect host=10.0.0.1", "\\e", "\\edit", "\\ef f", "\\ev v", "\\password",
    "\\setenv PAGER sh", "\\lo_import /etc/passwd", "\\lo_export 1 /tmp/x", "\\echo hi \\\\ \\! id",
    "SELECT 1;\n\\! id",
])
def test_meta_commands_that_leave_sql_are_refused(line: str) -> None:
    d = judge_psql_line(line)
    assert d.action == Action.BLOCK, line
    assert d.rule == RULE and "only SQL goes through the bastion" in d.reason


@pytest.mark.parametrize("line", [
    "SELECT 1;", "SELECT * FROM customers WHERE id = 1", "\\d customers", "\\dt", "\\x", "\\timing on",
    "\\o /tmp/out.txt", "\\g out.txt", "\\copy customers to stdout", "\\set a 'DR'", "SELECT 'x' \\gexec",
    "\\C title", "\\conninfo", "\\echo hello", "\\getenv x HOME",
])
def test_sql_and_harmless_meta_commands_pass(line: str) -> None:
    assert judge_psql_line(line).action == Action.ALLOW, line
