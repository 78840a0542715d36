"""psql meta-commands an operator types at an interactive prompt: the ones that leave SQL are refused.

This is feedback, not the boundary: SQL is judged at the wire, and psql runs sandboxed (no network, no secrets,
a throwaway home), so a meta-command that slipped past would still reach nothing. Refused: shell escapes
(``\\!``, a ``|command`` target of ``\\o``/``\\g``/``\\w``/``\\copy``), editors (``\\e``, ``\\ef``, ``\\ev``), new
connections (``\\c``), ``\\password``, ``\\setenv``, large-object file transfer (``\\lo_*``) and ``\\copy ... program``.
"""

from __future__ import annotations

import re

from policies.engine import Action, Decision

RULE = "psql-meta-commands"
REFUSED = {
    "!": "runs a shell command",
    "c": "opens another connection", "connect": "opens another connection",
    "e": "starts an editor", "edit": "starts an editor", "ef": "starts an editor", "ev": "starts an editor",
    "password": "changes a password outside the policy",
    "setenv": "changes the environment of psql's child processes",
    "lo_import": "moves files through large objects", "lo_export": "moves files through large objects",
    "lo_list": "works on large objects", "lo_unlink": "works on large objects",
}
PIPE_TARGETS = {"o", "out", "g", "gx", "w", "write", "copy"}
META = re.compile(r"\\([A-Za-z_]+|!)")


def _commands(line: str) -> list[tuple[str, str]]:
    """Every (meta-command, its arguments) in a line; arguments run to the next ``\\`` or the end of the line."""
    out = []
    for m in META.finditer(line):
        rest = line[m.end():]
        nxt = rest.find("\\")
        out.append((m.group(1), rest if nxt < 0 else rest[:nxt]))
    return out


def judge_psql_line(line: str) -> Decision:
    """Allow a psql input line unless it holds a meta-command that leaves SQL (see the module docstring)."""
    for name, args in _commands(line):
        why = REFUSED.get(name)  # meta-command names are case-sensitive (\C is not \c)
        if why is None and name in PIPE_TARGETS and args.lstrip().startswith("|"):
            why = "pipes output into a shell command"
        if why is None and name == "copy" and re.search(r"\bprogram\b", args, re.IGNORECASE):
            why = "runs a program"
        if why is not None:
            return Decision(Action.BLOCK, RULE, f"\\{name} {why}; only SQL goes through the bastion", line)
    return Decision(Action.ALLOW, None, "no meta-command that leaves SQL", line)
