"""Groups -> roles -> resources, deny by default."""

from dataclasses import dataclass, field

from policies.access import decide_open, grants_for, may_review, may_watch


@dataclass
class R:
    groups: list[str]
    resources: list[str] = field(default_factory=list)
    review: bool | list[str] = False
    audit: bool = False

    def reviews(self, resource: str) -> bool:
        import fnmatch

        pats = ["*"] if self.review is True else (self.review or [])
        return any(fnmatch.fnmatchcase(resource, p) for p in pats)


ROLES = {"ops": R(["ops"], ["web*", "db1"]), "rev": R(["reviewers"], review=True), "aud": R(["auditors"], audit=True)}
KNOWN = ["web1", "web2", "db1", "db2"]


def test_groups_grant_matching_resources_only() -> None:
    g = grants_for(["ops"], ROLES)
    assert g.roles == ("ops",)
    assert g.permitted(KNOWN) == ["db1", "web1", "web2"]
    assert decide_open(g, "web2", KNOWN).allowed
    assert not decide_open(g, "db2", KNOWN).allowed


def test_no_group_no_access_and_unknown_resource_same_answer() -> None:
    g = grants_for([], ROLES)
    assert g.roles == () and g.permitted(KNOWN) == []
    d1, d2 = decide_open(g, "db1", KNOWN), decide_open(grants_for(["ops"], ROLES), "nope", KNOWN)
    assert not d1.allowed and not d2.allowed
    assert "not permitted" in d1.reason and "not permitted" in d2.reason


def test_reviewer_and_auditor_flags() -> None:
    assert grants_for(["reviewers"], ROLES).review and not grants_for(["reviewers"], ROLES).audit
    assert grants_for(["auditors"], ROLES).audit
    assert grants_for(["reviewers"], ROLES).permitted(KNOWN) == []


def test_glob_does_not_match_as_substring() -> None:
    g = grants_for(["ops"], ROLES)
    assert not g.may_open("xweb1") and not g.may_open("db10")


def test_review_rights_follow_role_scope_and_rule_roles() -> None:
    roles = {**ROLES, "dba-rev": R(["dba"], review=["db*"])}
    rev, dba = grants_for(["reviewers"], roles), grants_for(["dba"], roles)
    assert may_review(rev, roles, "web1", ())
    assert may_review(rev, roles, "web1", ("rev",)) and not may_review(rev, roles, "web1", ("dba-rev",))
    assert may_review(dba, roles, "db1", ()) and not may_review(dba, roles, "web1", ())
    assert not may_review(grants_for(["ops"], roles), roles, "web1", ())


def test_who_may_watch_live_sessions() -> None:
    roles = {**ROLES, "dba-rev": R(["dba"], review=["db*"])}
    assert may_watch(grants_for(["auditors"], roles), roles, "anything")
    assert may_watch(grants_for(["reviewers"], roles), roles, "web1")
    dba = grants_for(["dba"], roles)
    assert may_watch(dba, roles, "db1") and not may_watch(dba, roles, "web1")
    assert not may_watch(grants_for(["ops"], roles), roles, "web1")  # operators: not even their own resources


@dataclass
class Q(R):
    request: list[str] = field(default_factory=list)
    request_ttl: float = 3600.0
    request_approvals: int = 1


def test_access_on_request() -> None:
    roles = {**ROLES, "ops": Q(["ops"], ["web*"]), "oncall": Q(["ops"], request=["db*"], request_ttl=900),
             "sre": Q(["sre"], request=["db2"], request_ttl=7200, request_approvals=2)}
    g = grants_for(["ops"], roles)
    assert g.permitted(KNOWN) == ["web1", "web2"] and g.requestable_only(KNOWN) == ["db1", "db2"]
    d = decide_open(g, "db1", KNOWN)
    assert not d.allowed and d.request is not None and (d.request.ttl, d.request.approvals) == (900, 1)
    assert "needs a reviewer's approval" in d.reason
    assert decide_open(g, "web1", KNOWN).request is None  # open as such: nothing to ask
    assert decide_open(g, "db9", KNOWN).request is None  # unknown: the usual answer, nothing to ask for
    both = grants_for(["ops", "sre"], roles)
    terms = both.request_terms("db2")  # the longest access any of the user's roles offers
    assert terms is not None and (terms.ttl, terms.approvals) == (7200, 2)
    assert grants_for(["auditors"], roles).requestable_only(KNOWN) == []
