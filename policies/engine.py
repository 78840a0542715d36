"""The policy engine: rules in named sets, evaluated in order, first match per simple command, strictest wins.

Pure and I/O-free. A decision always says which rule decided and why; parse failures and constructs the shell
parser cannot see through are decided as strictly as the set allows (fail closed).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from policies.shell import ParsedLine, ShellParseError, SimpleCommand, parse_line


class Action(IntEnum):
    """Ordered by strictness."""

    ALLOW = 0
    WARN = 1
    REQUIRE_APPROVAL = 2
    BLOCK = 3

    @classmethod
    def parse(cls, s: str) -> Action:
        return cls[s.upper()]

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Rule:
    """One rule. Empty match fields match anything; every non-empty field must match."""

    name: str
    action: Action
    programs: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    command: re.Pattern[str] | None = None
    groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    reason: str = ""
    approver_roles: tuple[str, ...] = ()
    approvals: int = 1
    timeout: float = 600.0

    def applies_to(self, groups: frozenset[str], resource: str) -> bool:
        if self.groups and not groups & set(self.groups):
            return False
        return not self.resources or any(fnmatch.fnmatchcase(resource, p) for p in self.resources)

    def matches(self, cmd: SimpleCommand) -> bool:
        if self.programs and not any(fnmatch.fnmatchcase(cmd.program, p) for p in self.programs):
            return False
        if self.args and not any(fnmatch.fnmatchcase(a, p) for a in cmd.args for p in self.args):
            return False
        return self.command is None or bool(self.command.search(" ".join((cmd.program, *cmd.args))))


@dataclass(frozen=True)
class PolicySet:
    name: str
    default: Action = Action.ALLOW
    rules: tuple[Rule, ...] = ()

    def strictest(self, groups: frozenset[str], resource: str) -> tuple[Action, Rule | None]:
        """The strictest outcome this set can give this user here: what an opaque command gets."""
        best: tuple[Action, Rule | None] = (self.default, None)
        for r in self.rules:
            if r.applies_to(groups, resource) and r.action > best[0]:
                best = (r.action, r)
        return best


@dataclass(frozen=True)
class Decision:
    """What to do with a command line, and why."""

    action: Action
    rule: str | None
    reason: str
    text: str
    explanation: tuple[str, ...] = ()
    approver_roles: tuple[str, ...] = ()
    approvals: int = 0
    timeout: float = 0.0
    programs: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, object]:
        return {"action": self.action.label, "rule": self.rule, "reason": self.reason, "text": self.text,
                "explanation": list(self.explanation), "programs": list(self.programs),
                "approvals": self.approvals, "approver_roles": list(self.approver_roles), "timeout": self.timeout}

    def summary(self) -> str:
        by = f"rule {self.rule!r}" if self.rule else "the default of the policy"
        return f"{self.action.label} by {by}: {self.reason}"


def _decide(action: Action, rule: Rule | None, reason: str, text: str, why: Sequence[str],
            programs: Sequence[str]) -> Decision:
    return Decision(action, rule.name if rule else None, reason, text, tuple(why),
                    rule.approver_roles if rule else (), rule.approvals if rule else 0,
                    rule.timeout if rule else 0.0, tuple(programs))


def evaluate(policy: PolicySet, text: str, *, groups: Iterable[str], resource: str,
             parsed: ParsedLine | None = None) -> Decision:
    """Decide a shell command line for a user (``groups``) on ``resource``."""
    gs = frozenset(groups)
    applicable = [r for r in policy.rules if r.applies_to(gs, resource)]
    try:
        line = parsed if parsed is not None else parse_line(text)
    except ShellParseError as e:
        strict, rule = policy.strictest(gs, resource)
        action = max(strict, Action.BLOCK)
        return _decide(action, None, f"the command cannot be parsed ({e}); refused", text,
                       [f"parse error: {e}"], ())
    why: list[str] = []
    best: tuple[Action, Rule | None, str] = (Action.ALLOW, None, "")
    programs = [c.program for c in line.commands]
    if not line.commands and not line.opaque:
        return _decide(Action.ALLOW, None, "nothing to run", text, ["empty command"], programs)
    for cmd in line.commands:
        rule = next((r for r in applicable if r.matches(cmd)), None)
        if rule is not None:
            action, reason = rule.action, rule.reason or f"{cmd.program} matches rule {rule.name!r}"
            why.append(f"{cmd.program}: rule {rule.name!r} -> {action.label}")
        else:
            action, reason = policy.default, f"{cmd.program}: no rule matched; default is {policy.default.label}"
            why.append(f"{cmd.program}: no rule -> default {policy.default.label}")
        if action > best[0] or best[2] == "":
            best = (action, rule, reason)
    if line.opaque:
        strict, rule = policy.strictest(gs, resource)
        constructs = ", ".join(dict.fromkeys(line.opaque))
        why.append(f"cannot see through: {constructs} -> strictest action of the policy ({strict.label})")
        if strict > best[0] or best[1] is None and strict == best[0] and strict != Action.ALLOW:
            reason = f"the engine cannot see through {constructs}; treated as strictly as the policy allows"
            if rule is not None and rule.reason:
                reason += f" ({rule.reason})"
            best = (strict, rule, reason)
    return _decide(best[0], best[1], best[2], text, why, programs)
