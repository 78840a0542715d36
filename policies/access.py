"""Who may open what: groups -> roles -> resources. Pure; deny by default."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


class RoleLike(Protocol):
    """What this module needs of a role definition."""

    groups: Sequence[str]
    resources: Sequence[str]
    review: bool | Sequence[str]
    audit: bool

    def reviews(self, resource: str) -> bool: ...


@dataclass(frozen=True)
class Grants:
    """What a user's groups grant: the matching roles and their resource patterns."""

    roles: tuple[str, ...]
    patterns: tuple[str, ...]
    review: bool
    audit: bool

    def may_open(self, resource: str) -> bool:
        """True if a role of this user names ``resource`` (exact name or glob)."""
        return any(fnmatch.fnmatchcase(resource, p) for p in self.patterns)

    def permitted(self, resources: Iterable[str]) -> list[str]:
        """The resources this user may open, sorted by name."""
        return sorted(r for r in resources if self.may_open(r))


@dataclass(frozen=True)
class AccessDecision:
    allowed: bool
    reason: str


def grants_for(groups: Iterable[str], roles: Mapping[str, RoleLike]) -> Grants:
    """Roles whose groups intersect ``groups``; no group, no role, no access."""
    gs = set(groups)
    matched = sorted(name for name, r in roles.items() if gs & set(r.groups))
    return Grants(
        roles=tuple(matched),
        patterns=tuple(p for name in matched for p in roles[name].resources),
        review=any(roles[n].review for n in matched),
        audit=any(roles[n].audit for n in matched),
    )


def may_review(grants: Grants, roles: Mapping[str, RoleLike], resource: str,
               approver_roles: Sequence[str]) -> bool:
    """Whether a user with ``grants`` may decide a request on ``resource`` that needs ``approver_roles``
    (any reviewing role when empty). Self-approval is checked by the caller, who knows the requester."""
    return any(roles[r].reviews(resource) and (not approver_roles or r in approver_roles) for r in grants.roles)


def decide_open(grants: Grants, resource: str, known: Iterable[str]) -> AccessDecision:
    """May the user open ``resource``? Unknown and not-permitted resources get the same answer."""
    if resource in set(known) and grants.may_open(resource):
        return AccessDecision(True, f"granted to role(s) {', '.join(grants.roles)}")
    return AccessDecision(False, f"no such resource or not permitted: {resource}")


def may_watch(grants: Grants, roles: Mapping[str, RoleLike], resource: str) -> bool:
    """Whether a user may see, observe and terminate live sessions on ``resource``: auditors everywhere, reviewers
    where they review."""
    return grants.audit or any(roles[r].reviews(resource) for r in grants.roles)
