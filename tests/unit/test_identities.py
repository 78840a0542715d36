"""OIDC identities and key bindings in the store (SQLite in a temp dir, migrated like the daemon does)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from bastion.store.db import Store
from bastion.store.identities import Identities, clean_name


@pytest.fixture()
def ids(tmp_path: Path) -> Identities:
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    store.migrate()
    return Identities(store, reserved={"alice"})


def test_identity_is_keyed_by_issuer_and_subject_not_by_name(ids: Identities) -> None:
    a = ids.upsert(issuer="https://idp", subject="s1", username="ann", email="ann@x", groups=["ops"])
    assert a == "ann"
    assert ids.upsert(issuer="https://idp", subject="s1", username="renamed", email=None, groups=[]) == "ann"
    other = ids.upsert(issuer="https://idp", subject="s2", username="ann", email=None, groups=[])
    assert other != "ann" and other.startswith("ann-")  # same claimed name, another person
    assert ids.upsert(issuer="https://other-idp", subject="s1", username="ann", email=None, groups=[]) not in (
        "ann", other)
    assert ids.upsert(issuer="https://idp", subject="s3", username="alice", email=None, groups=[]) != "alice"


def test_clean_name() -> None:
    assert clean_name("ann.lee@example.com") == "ann.lee"
    assert clean_name("rm -rf /; x") == "rm--rf----x"
    assert clean_name("@@@") == "user"


def test_bind_lookup_expire_revoke(ids: Identities) -> None:
    ids.upsert(issuer="https://idp", subject="s1", username="ann", email=None, groups=["ops", "dba"])
    bid = ids.bind("ann", "SHA256:abc", "ssh-ed25519 AAAA1", 3600, "127.0.0.1:5")
    hit = ids.lookup("SHA256:abc", "ssh-ed25519 AAAA1")
    assert hit is not None and hit.name == "ann" and list(hit.groups) == ["ops", "dba"] and hit.binding == bid
    assert ids.lookup("SHA256:abc", "ssh-ed25519 AAAA-other") is None  # the fingerprint alone is not enough
    assert [r.id for r in ids.list()] == [bid]
    assert ids.revoke(by="admin:root", fingerprint="abc") == [bid]
    assert ids.lookup("SHA256:abc", "ssh-ed25519 AAAA1") is None
    assert ids.list() == [] and ids.list(include_inactive=True)[0].state == "revoked"
    short = ids.bind("ann", "SHA256:def", "ssh-ed25519 AAAA2", 0.5, "")
    assert ids.lookup("SHA256:def", "ssh-ed25519 AAAA2") is not None
    time.sleep(0.7)
    assert ids.lookup("SHA256:def", "ssh-ed25519 AAAA2") is None
    assert ids.list(user="ann", include_inactive=True)[-1] == replace(ids.list(user="ann", include_inactive=True)[-1],
                                                                      id=short, state="expired")
    with pytest.raises(ValueError):
        ids.revoke(by="x")
