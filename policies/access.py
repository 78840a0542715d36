"""Who may open what: groups -> roles -> resources. Pure; deny by default."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


class RoleLike(Protocol):
    """What this module needs of a role definition."""

    @property
    def groups(self) -> Sequence[str]: ...
    @property
    def resources(self) -> Sequence[str]: ...
    @property
    def review(self) -> bool | Sequence[str]: ...
    @property
    def audit(self) -> bool: ...

    def reviews(self, resource: str) -> bool: ...


@dataclass(frozen=True)
class RequestTerms:
    """On what terms a resource may be asked for: how long granted access lasts, how many reviewers grant it."""

    ttl: float
    approvals: int


@dataclass(frozen=True)
class Grants:
    """What a user's groups grant: the matching roles and their resource patterns."""

    roles: tuple[str, ...]
    patterns: tuple[str, ...]
    review: bool
    audit: bool
    requestable: tuple[tuple[str, RequestTerms], ...] = ()  # (pattern, terms): resources one may ask for

    def may_open(self, resource: str) -> bool:
        """True if a role of this user names ``resource`` (exact name or glob)."""
        return any(fnmatch.fnmatchcase(resource, p) for p in self.patterns)

    def permitted(self, resources: Iterable[str]) -> list[str]:
        """The resources this user may open, sorted by name."""
        return sorted(r for r in resources if self.may_open(r))

    def request_terms(self, resource: str) -> RequestTerms | None:
        """The terms on which this user may ask for ``resource`` (the longest access any role offers), or None."""
        terms = [t for p, t in self.requestable if fnmatch.fnmatchcase(resource, p)]
        return max(terms, key=lambda t: (t.ttl, -t.approvals)) if terms else None

    def requestable_only(self, resources: Iterable[str]) -> list[str]:
        """The resources this user may ask for but not open, sorted by name."""
        return sorted(r for r in resources if not self.may_open(r) and self.request_terms(r) is not None)


@dataclass(frozen=True)
class AccessDecision:
    allowed: bool
    reason: str
    request: RequestTerms | None = None  # not allowed as such, but a reviewer may grant it on these terms


def grants_for(groups: Iterable[str], roles: Mapping[str, RoleLike]) -> Grants:
    """Roles whose groups intersect ``groups``; no group, no role, no access."""
    gs = set(groups)
    matched = sorted(name for name, r in roles.items() if gs & set(r.groups))
    return Grants(
        roles=tuple(matched),
        patterns=tuple(p for name in matched for p in roles[name].resources),
        review=any(roles[n].review for n in matched),
        audit=any(roles[n].audit for n in matched),
        requestable=tuple((p, RequestTerms(float(getattr(roles[n], "request_ttl", 3600.0)),
                                           int(getattr(roles[n], "request_approvals", 1))))
                          for n in matched for p in getattr(roles[n], "request", ())),
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
    terms = grants.request_terms(resource) if resource in set(known) else None
    if terms is not None:
        return AccessDecision(False, f"access to {resource} needs a reviewer's approval", terms)
    return AccessDecision(False, f"no such resource or not permitted: {resource}")


def may_watch(grants: Grants, roles: Mapping[str, RoleLike], resource: str) -> bool:
    """Whether a user may see, observe and terminate live sessions on ``resource``: auditors everywhere, reviewers
    where they review."""
    return grants.audit or any(roles[r].reviews(resource) for r in grants.roles)
