"""Command policies (``policies:``): the rules an admin writes, and their translation into the pure policy engine's
:class:`~policies.engine.PolicySet` (the engine knows nothing about YAML or pydantic)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from bastion.config.base import NAME_RE, StrictModel
from policies.engine import Action, PolicySet, Rule


class Approvers(StrictModel):
    roles: list[Annotated[str, Field(pattern=NAME_RE)]] = []
    count: Annotated[int, Field(ge=1, le=10)] = 1


class RuleModel(StrictModel):
    name: Annotated[str, Field(pattern=NAME_RE)]
    action: Literal["allow", "warn", "require_approval", "block"]
    programs: list[str] = []
    args: list[str] = []
    command: str | None = None
    groups: list[str] = []
    resources: list[str] = []
    reason: Annotated[str, Field(max_length=300)] = ""
    approvers: Approvers | None = None
    timeout: Annotated[float, Field(gt=0, le=86400)] = 600.0
    statements: list[str] = []   # SQL: statement kinds (select, delete, drop, copy, set_role, ...)
    tables: list[str] = []       # SQL: tables referenced (globs; qualified or not)
    traits: list[Literal["no_where", "copy_program", "copy_file", "copy_from", "copy_to", "dynamic", "privilege",
                         "rule", "set_role", "dangerous_function", "plants_code"]] = []
    # SQL writes: run the statement with a limit on the rows it touches; over it, the rule's action applies
    # (block, or hold: once approved the exact text runs again without the limit)
    max_rows: Annotated[int, Field(ge=0)] | None = None
    functions: list[str] = []    # SQL: functions called (globs)
    verbs: list[Literal["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "post",
                        "put", "*"]] = []  # Kubernetes (RBAC verbs; exec/attach/portforward/proxy are create)
    api_resources: list[Annotated[str, Field(pattern=r"^[a-z0-9*][a-z0-9.*-]*(/[a-z0-9*]+)?$")]] = []
    api_groups: list[str] = []   # Kubernetes: "" is the core group
    namespaces: list[str] = []   # Kubernetes: globs
    names: list[str] = []        # Kubernetes: object names (globs)
    paths: list[str] = []        # Kubernetes: non-resource URLs (globs), e.g. /metrics; with transfer: file paths
    # File transfers (SFTP requests, scp/rsync/git in the exec form): the operations the rule names
    transfer: list[Literal["upload", "download", "remove", "rename", "chmod", "mkdir", "rmdir", "symlink"]] = []
    max_bytes: Annotated[int, Field(ge=0)] | None = None  # uploads/downloads: applies to a known size above this

    @model_validator(mode="after")
    def _max_rows(self) -> RuleModel:
        """A row limit only means something for writes, and only with an action that says what happens over it."""
        if self.max_rows is not None:
            if self.action not in ("block", "require_approval"):
                raise ValueError("max_rows needs action block or require_approval (what happens over the limit)")
            if not self.statements or set(self.statements) - {"insert", "update", "delete", "merge"}:
                raise ValueError("max_rows applies to statements: [insert, update, delete, merge] (some of them)")
        return self

    @model_validator(mode="after")
    def _max_bytes(self) -> RuleModel:
        """A size limit only means something for uploads and downloads (the only transfers with a size), and only
        with an action that says what happens above it."""
        if self.max_bytes is not None:
            if not {"upload", "download"} & set(self.transfer):
                raise ValueError("max_bytes applies to transfer: [upload, download] (one of them at least)")
            if self.action not in ("block", "require_approval"):
                raise ValueError("max_bytes needs action block or require_approval (what happens over the size)")
        return self

    @model_validator(mode="after")
    def _one_kind(self) -> RuleModel:
        """A rule mixing shell, SQL, Kubernetes and transfer matchers could never match anything: say so instead.
        ``paths`` is a transfer field in a rule with ``transfer`` and a Kubernetes field otherwise."""
        kube = "Kubernetes (verbs/api_resources/api_groups/namespaces/names" + ("" if self.transfer else "/paths") + ")"
        kinds = [k for k, on in (("shell (programs/args)", self.programs or self.args),
                                 ("SQL (statements/tables/traits/functions)",
                                  self.statements or self.tables or self.traits or self.functions),
                                 (kube, self.verbs or self.api_resources or self.api_groups or self.namespaces
                                  or self.names or (self.paths and not self.transfer)),
                                 ("transfer (transfer/paths/max_bytes)", self.transfer)) if on]
        if len(kinds) > 1:
            raise ValueError(f"a rule matches one kind of command; this one mixes {' and '.join(kinds)}")
        if self.transfer and any(not p.startswith(("/", "*")) for p in self.paths):
            raise ValueError("a transfer rule's paths are globs on absolute file paths (start with / or *)")
        return self

    @field_validator("command")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        """A bad regular expression is a config error now, not a crash when the first command is matched."""
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"not a valid regular expression: {e}") from None
        return v


class PolicyModel(StrictModel):
    default: Literal["allow", "warn", "require_approval", "block"] = "allow"
    rules: list[RuleModel] = []


def policy_set(name: str, p: PolicyModel) -> PolicySet:
    """The engine's view of a policy: tuples, parsed actions, compiled regexes, lower-cased SQL/Kubernetes names."""
    return PolicySet(name, Action.parse(p.default), tuple(
        Rule(r.name, Action.parse(r.action), tuple(r.programs), tuple(r.args),
             re.compile(r.command) if r.command else None, tuple(r.groups), tuple(r.resources), r.reason,
             tuple(r.approvers.roles) if r.approvers else (), r.approvers.count if r.approvers else 1, r.timeout,
             tuple(r.statements), tuple(t.lower() for t in r.tables), tuple(r.traits),
             tuple(f.lower() for f in r.functions), tuple(r.verbs), tuple(a.lower() for a in r.api_resources),
             tuple(r.api_groups), tuple(r.namespaces), tuple(r.names), tuple(r.paths), r.max_rows,
             tuple(r.transfer), r.max_bytes)
        for r in p.rules))
