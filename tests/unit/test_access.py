"""Groups -> roles -> resources, deny by default."""

from dataclasses import dataclass, field

from policies.access import decide_open, grants_for


@dataclass
class R:
    groups: list[str]
    resources: list[str] = field(default_factory=list)
    review: bool = False
    audit: bool = False


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
