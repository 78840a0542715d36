"""The policy engine: rules in named sets, evaluated in order, first match per simple command, strictest wins.

Pure and I/O-free. A decision always says which rule decided and why; parse failures and constructs the shell
parser cannot see through are decided as strictly as the set allows (fail closed).
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum
from functools import cached_property

from policies.kube import KubeRequest, guardrail, resource_matches
from policies.shell import WRITES_SENSITIVE, WRITES_UNSEEN, ParsedLine, ShellParseError, SimpleCommand, parse_line
from policies.sql import SqlParseError, Statement, classify_sql


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
    statements: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    traits: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()          # Kubernetes: get list watch create update patch delete (+deletecollection)
    api_resources: tuple[str, ...] = ()  # Kubernetes: pods, pods/exec, deployments.apps, */scale (RBAC-style)
    api_groups: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()          # Kubernetes non-resource URLs (globs)
    max_rows: int | None = None          # SQL writes: the rows a statement may touch before ``action`` applies
    # File transfers (policies/transfer.py): the operations a rule names (upload, download, remove, ...); with it,
    # ``paths`` are globs on absolute file paths instead of Kubernetes URLs
    transfer: tuple[str, ...] = ()
    max_bytes: int | None = None         # uploads/downloads: the rule applies only to a known size above this

    @property
    def _shell_fields(self) -> bool:
        return bool(self.programs or self.args)

    @property
    def _sql_fields(self) -> bool:
        return bool(self.statements or self.tables or self.traits or self.functions)

    @property
    def _kube_fields(self) -> bool:
        """``paths`` alone is a Kubernetes field (non-resource URLs); with ``transfer`` it belongs to the transfer."""
        return bool(self.verbs or self.api_resources or self.api_groups or self.namespaces or self.names
                    or (self.paths and not self.transfer))

    @property
    def _transfer_fields(self) -> bool:
        return bool(self.transfer or self.max_bytes is not None)

    @property
    def for_sql(self) -> bool:
        """False for rules that only make sense for shell commands, Kubernetes requests or file transfers."""
        return not (self._shell_fields or self._kube_fields or self._transfer_fields)

    @property
    def for_shell(self) -> bool:
        """False for rules that only make sense for SQL, Kubernetes requests or file transfers."""
        return not (self._sql_fields or self._kube_fields or self._transfer_fields)

    @property
    def for_kube(self) -> bool:
        """False for rules that only make sense for shell commands, SQL or file transfers."""
        return not (self._shell_fields or self._sql_fields or self._transfer_fields)

    @property
    def for_transfer(self) -> bool:
        """False for rules that only make sense for shell commands, SQL or Kubernetes requests."""
        return not (self._shell_fields or self._sql_fields or self._kube_fields)

    def matches_kube(self, req: KubeRequest) -> bool:
        """Every named field must match; ``delete`` also covers ``deletecollection``."""
        if self.paths and (req.resource_request or not any(fnmatch.fnmatchcase(req.path, p) for p in self.paths)):
            return False
        if (self.api_resources or self.api_groups or self.namespaces or self.names) and not req.resource_request:
            return False
        if self.verbs:
            verbs = {req.verb, "delete"} if req.verb == "deletecollection" else {req.verb}
            if not verbs & set(self.verbs) and "*" not in self.verbs:
                return False
        if self.api_resources and not any(resource_matches(p, req) for p in self.api_resources):
            return False
        if self.api_groups and not any(fnmatch.fnmatchcase(req.api_group, p) for p in self.api_groups):
            return False
        if self.namespaces and not any(fnmatch.fnmatchcase(req.namespace, p) for p in self.namespaces):
            return False
        if self.names and not any(fnmatch.fnmatchcase(req.name, p) for p in self.names):
            return False
        return self.command is None or bool(self.command.search(req.describe()))

    def matches_sql(self, st: Statement) -> bool:
        if self.statements and not any(fnmatch.fnmatchcase(st.kind, p) for p in self.statements):
            return False
        if self.tables and not any(fnmatch.fnmatchcase(t, p) or fnmatch.fnmatchcase(t.rsplit(".", 1)[-1], p)
                                   for t in st.tables for p in self.tables):
            return False
        if self.traits and not set(self.traits) & set(st.traits):
            return False
        if self.functions and not any(fnmatch.fnmatchcase(f, p) for f in st.functions for p in self.functions):
            return False
        return self.command is None or bool(self.command.search(st.text))

    def applies_to(self, groups: frozenset[str], resource: str) -> bool:
        if self.groups and not groups & set(self.groups):
            return False
        return not self.resources or any(fnmatch.fnmatchcase(resource, p) for p in self.resources)

    @cached_property
    def _program_names(self) -> frozenset[str] | None:
        """The programs as a set when none is a glob (the common case: a set lookup, not fnmatch per name)."""
        if any(ch in p for p in self.programs for ch in "*?["):
            return None
        return frozenset(self.programs)

    def matches(self, cmd: SimpleCommand) -> bool:
        """Every named field must match. When the command's real arguments are not all visible (``args_open``:
        xargs or find add some, a variable or glob expands), an ``args`` pattern is taken to match, and a
        ``command`` pattern is tried on the program name alone as well: a rule that could apply does apply."""
        if self.programs:
            names = self._program_names
            if names is not None:
                if cmd.program not in names:
                    return False
            elif not any(fnmatch.fnmatchcase(cmd.program, p) for p in self.programs):
                return False
        if self.args and not cmd.args_open and not any(fnmatch.fnmatchcase(a, p) for a in cmd.args
                                                       for p in self.args):
            return False
        return self.command is None or bool(self.command.search(" ".join((cmd.program, *cmd.args))))


@dataclass(frozen=True)
class PolicySet:
    name: str
    default: Action = Action.ALLOW
    rules: tuple[Rule, ...] = ()

    def applicable(self, kind: str, groups: frozenset[str], resource: str) -> list[Rule]:
        """The rules of ``kind`` (shell, sql, kube, transfer) that apply to these groups on this resource, in order;
        kept per (kind, groups, resource) because every command line of a session asks the same question."""
        cache: dict[tuple[str, frozenset[str], str], list[Rule]] = self.__dict__.setdefault("_applicable", {})
        key = (kind, groups, resource)
        hit = cache.get(key)
        if hit is None:
            if len(cache) > 512:
                cache.clear()
            hit = cache[key] = [r for r in self.rules if getattr(r, f"for_{kind}") and r.applies_to(groups, resource)]
        return hit

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
    # SQL: run it, but when the statement touches more rows than ``max_rows``, roll it back and apply ``over_limit``
    max_rows: int | None = None
    over_limit: Decision | None = None

    def as_dict(self) -> dict[str, object]:
        return {"action": self.action.label, "rule": self.rule, "reason": self.reason, "text": self.text,
                "explanation": list(self.explanation), "programs": list(self.programs),
                "approvals": self.approvals, "approver_roles": list(self.approver_roles), "timeout": self.timeout}

    def summary(self) -> str:
        by = f"rule {self.rule!r}" if self.rule else "the default of the policy"
        return f"{self.action.label} by {by}: {self.reason}"

    def refusal(self) -> str:
        """How a refused decision reads to the operator: the rule that refused it, or, when no rule did (the command
        cannot be parsed, a built-in guardrail, the policy's default), ``refused:`` and the reason, which says what
        refused it. There is no rule called None."""
        if self.rule:
            return f"blocked by rule {self.rule!r}: {self.reason}"
        return self.reason if self.reason.startswith("refused") else f"refused: {self.reason}"

    def warning(self) -> str:
        """The line an operator sees for a ``warn`` decision before the command runs: the rule and its reason."""
        by = f"rule {self.rule!r}" if self.rule else "the default of the policy"
        return f"warning ({by}): {self.reason}"


def _decide(action: Action, rule: Rule | None, reason: str, text: str, why: Sequence[str],
            programs: Sequence[str]) -> Decision:
    return Decision(action, rule.name if rule else None, reason, text, tuple(why),
                    rule.approver_roles if rule else (), rule.approvals if rule else 0,
                    rule.timeout if rule else 0.0, tuple(programs))


def judge_command(policy: PolicySet, applicable: Sequence[Rule], cmd: SimpleCommand, why: list[str],
                  label: str | None = None) -> tuple[Action, Rule | None, str]:
    """One simple command: the first applicable rule that matches it, else the policy's default; the step is added
    to ``why`` (``label``: how to name the program there, default its name)."""
    name = cmd.program if label is None else label
    rule = next((r for r in applicable if r.matches(cmd)), None)
    if rule is not None:
        why.append(f"{name}: rule {rule.name!r} -> {rule.action.label}")
        return rule.action, rule, rule.reason or f"{name} matches rule {rule.name!r}"
    why.append(f"{name}: no rule -> default {policy.default.label}")
    return policy.default, None, f"{name}: no rule matched; default is {policy.default.label}"


def evaluate(policy: PolicySet, text: str, *, groups: Iterable[str], resource: str,
             parsed: ParsedLine | None = None, interactive: bool = False, terminal: bool = True,
             guarded: bool = False) -> Decision:
    """Decide a shell command line for a user (``groups``) on ``resource``.

    ``interactive``: the line was typed at an interactive shell's prompt (bash history expansion may rewrite it);
    ``terminal``: the command runs with a terminal attached (pagers and editors then read keys from the operator).
    The exec form passes ``interactive=False`` and whether a pty was requested. ``guarded``: the line runs under
    bastion-guard, which judges every program it starts as it starts: what the engine cannot see through about the
    programs (scripts, ``bash -c``, ``eval``, interpreters) is left to it, and only the shell's own writes
    (redirections) stay opaque here.
    """
    gs = frozenset(groups)
    applicable = policy.applicable("shell", gs, resource)
    try:
        line = parsed if parsed is not None else parse_line(text, interactive=interactive, terminal=terminal)
    except ShellParseError as e:
        strict, rule = policy.strictest(gs, resource)
        action = max(strict, Action.BLOCK)
        return _decide(action, None, f"the command cannot be parsed ({e})", text,
                       [f"parse error: {e}"], ())
    why: list[str] = list(dict.fromkeys(line.steps))
    if guarded and line.opaque:
        seen = [o for o in line.opaque if not o.startswith((WRITES_UNSEEN, WRITES_SENSITIVE))]
        line = replace(line, opaque=[o for o in line.opaque if o.startswith((WRITES_UNSEEN, WRITES_SENSITIVE))])
        why += [f"left to bastion-guard (it judges each program as it runs): {o}" for o in seen]
    best: tuple[Action, Rule | None, str] = (Action.ALLOW, None, "")
    programs = [c.program for c in line.commands]
    if not line.commands and not line.opaque:
        return _decide(Action.ALLOW, None, "nothing to run", text, ["empty command"], programs)
    for cmd in line.commands:
        action, rule, reason = judge_command(policy, applicable, cmd, why)
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


def evaluate_sql(policy: PolicySet, text: str, *, groups: Iterable[str], resource: str) -> Decision:
    """Decide a SQL string (one or many statements, as sent) for a user on ``resource``.

    Every statement that would execute is judged, nested ones included; the strictest decision wins. Dynamic SQL
    (``DO``, ``EXECUTE``, functions that run a query string) needs at least an approval; a parse failure is refused.
    """
    gs = frozenset(groups)
    applicable = policy.applicable("sql", gs, resource)
    try:
        stmts = classify_sql(text)
    except SqlParseError as e:
        return _decide(Action.BLOCK, None, f"the SQL cannot be parsed ({e})", text, [f"parse error: {e}"],
                       ())
    if not stmts:
        return _decide(Action.ALLOW, None, "nothing to run", text, ["no statement"], ())
    why: list[str] = []
    best: tuple[Action, Rule | None, str] | None = None
    limit: Rule | None = None
    for st in stmts:
        label = st.kind + (" (nested)" if st.nested else "")
        rule = next((r for r in applicable if r.matches_sql(st)), None)
        if rule is not None and rule.max_rows is not None:
            # a write with a blast-radius limit runs (measured); over the limit the rule's action applies
            if limit is None or rule.max_rows < (limit.max_rows or 0):
                limit = rule
            why.append(f"{label}: rule {rule.name!r} -> at most {rule.max_rows} row(s), else {rule.action.label}")
            rule = next((r for r in applicable if r.max_rows is None and r.matches_sql(st)), None)
            if rule is None:
                action, reason = policy.default, f"{st.kind}: within the row limit; default is {policy.default.label}"
                if best is None or action > best[0]:
                    best = (action, None, reason)
                continue
        if rule is not None:
            action, reason = rule.action, rule.reason or f"{st.kind} matches rule {rule.name!r}"
            why.append(f"{label}: rule {rule.name!r} -> {action.label}")
        else:
            action, reason = policy.default, f"{st.kind}: no rule matched; default is {policy.default.label}"
            why.append(f"{label}: no rule -> default {policy.default.label}")
        if "dynamic" in st.traits and action < Action.REQUIRE_APPROVAL:
            approval = next((r for r in applicable if r.action == Action.REQUIRE_APPROVAL), None)
            rule = approval
            action = Action.REQUIRE_APPROVAL if approval else Action.BLOCK
            reason = ("dynamic SQL runs statements the bastion cannot see" +
                      ("; it needs approval" if approval else ", and this policy names no approvers"))
            why.append(f"{label}: dynamic SQL -> {action.label}")
        if best is None or action > best[0]:
            best = (action, rule, reason)
    assert best is not None
    d = _decide(best[0], best[1], best[2], text, why, [s.kind for s in stmts])
    if limit is not None and d.action < Action.BLOCK:
        over = _decide(limit.action, limit, limit.reason or f"more than {limit.max_rows} row(s) touched", text, why,
                       d.programs)
        d = replace(d, max_rows=limit.max_rows, over_limit=over)
    return d


def evaluate_kube(policy: PolicySet, req: KubeRequest, *, groups: Iterable[str], resource: str,
                  port_forward: bool = False) -> Decision:
    """Decide one Kubernetes API request for a user on ``resource``.

    The first matching rule decides; with none, the built-in guardrails (secrets, proxy, service account tokens,
    CSRs, non-discovery non-resource URLs; port-forward unless the resource enables it) refuse, else the policy's
    default applies (discovery reads are always allowed: kubectl cannot work without them). A non-interactive exec
    is also judged as a shell command (its argv), and the stricter decision wins.
    """
    gs = frozenset(groups)
    text = req.describe()
    applicable = policy.applicable("kube", gs, resource)
    rule = next((r for r in applicable if r.matches_kube(req)), None)
    why: list[str] = [f"{req.method} {req.path} -> {text}"]
    if rule is not None:
        action, reason = rule.action, rule.reason or f"{text} matches rule {rule.name!r}"
        why.append(f"rule {rule.name!r} -> {action.label}")
    elif req.discovery:
        action, reason = Action.ALLOW, "discovery"
        why.append("discovery read -> allow")
    elif (guard := guardrail(req)) is not None and not (port_forward and req.subresource == "portforward"):
        action = Action.BLOCK
        reason = f"{guard} (a guardrail of the bastion: only a rule that names it lets it through)"
        why.append(f"guardrail -> block ({guard})")
    else:
        action, reason = policy.default, f"{text}: no rule matched; default is {policy.default.label}"
        why.append(f"no rule -> default {policy.default.label}")
    best = (action, rule, reason)
    if req.subresource == "exec" and req.command and not req.interactive and action < Action.BLOCK:
        inner = evaluate(policy, shlex.join(req.command), groups=gs, resource=resource, terminal=False)
        why.append(f"exec argv: {inner.summary()}")
        if inner.action > action:
            inner_rule = next((r for r in policy.rules if r.name == inner.rule), None)
            best = (inner.action, inner_rule, f"in the pod: {inner.reason}")
    return _decide(best[0], best[1], best[2], text, why, [req.resource_path] if req.resource_request else [])
