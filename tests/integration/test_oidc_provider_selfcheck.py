"""The OpenID Provider harness itself (bastion/demo/oidc + tests/support/oidc.py), against the real oidc-provider."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jws, jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError
from joserfc.jwk import KeySet

from tests.support.oidc import (
    DEVICE_GRANT,
    Provider,
    complete_device_flow,
    device_authorize,
    discovery,
    make_jwks,
    poll_token,
    public_jwks,
    start_provider,
    userinfo,
)

pytestmark = pytest.mark.slow

SECRET = "s3cret-of-the-bastion"
CLIENTS = [{"client_id": "bastion", "client_secret": SECRET}, {"client_id": "cli"}]
ACCOUNTS = {
    "alice": {"password": "alice-pw", "sub": "u-1001", "email": "alice@example.test", "groups": ["ops", "dev"]},
    "bob": {"password": "bob-pw", "sub": "u-1002", "email": "bob@example.test", "groups": []},
}
SCOPE = "openid email groups"


@pytest.fixture(scope="module")
def op(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    with start_provider(tmp_path_factory.mktemp("oidc"), clients=CLIENTS, accounts=ACCOUNTS,
                        jwks=make_jwks("key-1")) as provider:
        yield provider


def _secret(client_id: str) -> str | None:
    return SECRET if client_id == "bastion" else None


def _sign_in(op: Provider, client_id: str, login: str, *, scope: str = SCOPE,
             complete_uri: bool = False) -> dict[str, Any]:
    """A whole device flow: authorize, one pending poll, the user approves, then the token response."""
    secret = _secret(client_id)
    auth = device_authorize(op.issuer, client_id, scope, secret)
    assert auth["verification_uri"].startswith(op.issuer + "/"), auth
    assert poll_token(op.issuer, client_id, auth["device_code"], secret)["error"] == "authorization_pending"
    uri = auth["verification_uri_complete"] if complete_uri else auth["verification_uri"]
    complete_device_flow(uri, auth["user_code"], login, ACCOUNTS[login]["password"])
    tokens = poll_token(op.issuer, client_id, auth["device_code"], secret)
    assert "id_token" in tokens, tokens
    return {**tokens, "device_code": auth["device_code"]}


def _verify(op: Provider, id_token: str, client_id: str) -> dict[str, Any]:
    """ID token claims, after checking its signature against the provider's published JWKS, and iss/aud/exp."""
    published = KeySet.import_key_set(httpx.get(discovery(op.issuer)["jwks_uri"], timeout=10).json())
    alg = jws.extract_compact(id_token.encode()).protected["alg"]
    claims = jwt.decode(id_token, published, algorithms=[alg]).claims
    jwt.JWTClaimsRegistry(iss={"essential": True, "value": op.issuer}, aud={"essential": True, "value": client_id},
                          exp={"essential": True}, sub={"essential": True}).validate(claims)
    return claims


def _kid(token: str) -> str:
    return jws.extract_compact(token.encode()).protected["kid"]


def test_discovery_and_jwks(op: Provider) -> None:
    meta = discovery(op.issuer)
    assert meta["issuer"] == op.issuer == f"http://127.0.0.1:{op.port}"
    assert meta["device_authorization_endpoint"] == f"{op.issuer}/device/auth"
    assert DEVICE_GRANT in meta["grant_types_supported"]
    assert {"openid", "email", "groups"} <= set(meta["scopes_supported"])
    assert "groups" in meta["claims_supported"]
    published = httpx.get(meta["jwks_uri"], timeout=10).json()
    assert published == public_jwks(op.jwks)
    assert all("d" not in key for key in published["keys"])


@pytest.mark.parametrize(("client_id", "complete_uri"), [("bastion", False), ("cli", True)])
def test_device_flow_gives_a_signed_id_token_with_groups(op: Provider, client_id: str, complete_uri: bool) -> None:
    auth = device_authorize(op.issuer, client_id, SCOPE, _secret(client_id))
    assert (auth["expires_in"], auth["interval"]) == (600, 1)
    tokens = _sign_in(op, client_id, "alice", complete_uri=complete_uri)
    claims = _verify(op, tokens["id_token"], client_id)
    assert _kid(tokens["id_token"]) == "key-1"
    assert claims["sub"] == "u-1001"
    assert claims["groups"] == ["ops", "dev"]
    assert claims["email"] == "alice@example.test"
    assert set(tokens["scope"].split()) == set(SCOPE.split())
    assert userinfo(op.issuer, tokens["access_token"])["groups"] == ["ops", "dev"]
    # the signature check is a real one: the same kid with other key material does not verify
    impostor = KeySet.import_key_set(public_jwks(make_jwks("key-1")))
    with pytest.raises(BadSignatureError):
        jwt.decode(tokens["id_token"], impostor, algorithms=["RS256"])


def test_another_account_and_a_client_without_the_groups_scope(op: Provider) -> None:
    claims = _verify(op, _sign_in(op, "cli", "bob", scope="openid email")["id_token"], "cli")
    assert claims["sub"] == "u-1002"
    assert claims["email"] == "bob@example.test"
    assert "groups" not in claims


def test_a_device_code_is_good_once_and_a_replay_revokes_its_tokens(op: Provider) -> None:
    tokens = _sign_in(op, "bastion", "alice")
    assert userinfo(op.issuer, tokens["access_token"])["sub"] == "u-1001"
    assert poll_token(op.issuer, "bastion", tokens["device_code"], SECRET)["error"] == "invalid_grant"
    with pytest.raises(httpx.HTTPStatusError) as refused:
        userinfo(op.issuer, tokens["access_token"])
    assert refused.value.response.status_code == 401


def test_wrong_password_is_refused(op: Provider) -> None:
    auth = device_authorize(op.issuer, "cli", SCOPE)
    with pytest.raises(AssertionError, match="Invalid login or password"):
        complete_device_flow(auth["verification_uri"], auth["user_code"], "alice", "not-her-password")
    assert poll_token(op.issuer, "cli", auth["device_code"])["error"] == "authorization_pending"


def test_denied_consent_is_access_denied(op: Provider) -> None:
    auth = device_authorize(op.issuer, "bastion", SCOPE, SECRET)
    complete_device_flow(auth["verification_uri"], auth["user_code"], "alice", "alice-pw", approve=False)
    assert poll_token(op.issuer, "bastion", auth["device_code"], SECRET)["error"] == "access_denied"
    with pytest.raises(AssertionError, match="already been used"):
        complete_device_flow(auth["verification_uri"], auth["user_code"], "alice", "alice-pw")


def test_polling_too_fast_is_slow_down_and_the_interval_grows(op: Provider) -> None:
    auth = device_authorize(op.issuer, "cli", SCOPE)
    code = auth["device_code"]
    assert poll_token(op.issuer, "cli", code)["error"] == "authorization_pending"
    time.sleep(auth["interval"] + 0.1)
    assert poll_token(op.issuer, "cli", code)["error"] == "authorization_pending"  # on time
    assert poll_token(op.issuer, "cli", code)["error"] == "slow_down"  # at once
    time.sleep(auth["interval"] + 0.1)
    # after a slow_down the client must wait interval + 5 s (RFC 8628 3.5); the old interval is too fast now
    assert poll_token(op.issuer, "cli", code)["error"] == "slow_down"
    complete_device_flow(auth["verification_uri"], auth["user_code"], "alice", "alice-pw")
    assert "id_token" in poll_token(op.issuer, "cli", code)  # slow_down only ever replaces a pending answer


def test_backing_off_after_slow_down_is_accepted(tmp_path: Path) -> None:
    with start_provider(tmp_path, clients=CLIENTS, accounts=ACCOUNTS, slow_down_increment=1) as op:
        code = device_authorize(op.issuer, "cli", SCOPE)["device_code"]
        assert poll_token(op.issuer, "cli", code)["error"] == "authorization_pending"
        assert poll_token(op.issuer, "cli", code)["error"] == "slow_down"
        time.sleep(1 + 1 + 0.1)  # interval + one increment
        assert poll_token(op.issuer, "cli", code)["error"] == "authorization_pending"


def test_groups_only_from_userinfo_when_not_in_the_id_token(tmp_path: Path) -> None:
    with start_provider(tmp_path, clients=CLIENTS, accounts=ACCOUNTS, groups_in_id_token=False) as op:
        tokens = _sign_in(op, "bastion", "alice")
        claims = _verify(op, tokens["id_token"], "bastion")
        assert claims["sub"] == "u-1001"
        assert "groups" not in claims and "email" not in claims
        info = userinfo(op.issuer, tokens["access_token"])
        assert info == {"sub": "u-1001", "groups": ["ops", "dev"], "email": "alice@example.test",
                        "email_verified": True}


def test_short_device_code_ttl_expires(tmp_path: Path) -> None:
    with start_provider(tmp_path, clients=CLIENTS, accounts=ACCOUNTS, device_code_ttl=3) as op:
        auth = device_authorize(op.issuer, "bastion", SCOPE, SECRET)
        issued = time.monotonic()  # the code was made before this; it expires at most 3 s after that
        assert auth["expires_in"] == 3
        assert poll_token(op.issuer, "bastion", auth["device_code"], SECRET)["error"] == "authorization_pending"
        time.sleep(max(0.0, issued + 3.1 - time.monotonic()))
        assert poll_token(op.issuer, "bastion", auth["device_code"], SECRET)["error"] == "expired_token"
        with pytest.raises(AssertionError, match="has expired"):
            complete_device_flow(auth["verification_uri"], auth["user_code"], "alice", "alice-pw")


def test_restart_with_a_new_jwks_rotates_the_kid(tmp_path: Path) -> None:
    with start_provider(tmp_path, clients=CLIENTS, accounts=ACCOUNTS, jwks=make_jwks("old-key")) as op:
        issuer = op.issuer
        old = _sign_in(op, "cli", "alice")["id_token"]
        assert _kid(old) == "old-key"
        op.restart(jwks=make_jwks("new-key", "ES256"))
        assert op.issuer == issuer
        assert [k["kid"] for k in httpx.get(f"{issuer}/jwks", timeout=10).json()["keys"]] == ["new-key"]
        new = _sign_in(op, "cli", "alice")["id_token"]
        assert (_kid(new), jws.extract_compact(new.encode()).protected["alg"]) == ("new-key", "ES256")
        assert _verify(op, new, "cli")["groups"] == ["ops", "dev"]
        with pytest.raises(InvalidKeyIdError):  # the old kid is no longer published
            _verify(op, old, "cli")
