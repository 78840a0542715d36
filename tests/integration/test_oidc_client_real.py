"""The bastion's OIDC client (bastion/oidc/client.py) against the real npm ``oidc-provider``: a whole device flow,
denial, expiry, slow_down, a token for another audience, an unknown signing key, key rotation, userinfo groups."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from bastion.config import OidcModel
from bastion.oidc.client import DeviceCode, Identity, OidcClient, OidcError
from bastion.oidc.device import DeviceFlowError
from tests.support.oidc import (
    Provider,
    complete_device_flow,
    device_authorize,
    make_jwks,
    poll_token,
    start_provider,
)

pytestmark = pytest.mark.slow

SECRET = "bastion-client-secret"
CLIENTS = [{"client_id": "bastion", "client_secret": SECRET}, {"client_id": "other-app"}]
ACCOUNTS = {
    "ann": {"password": "ann-pw", "sub": "sub-ann", "email": "ann@example.test", "preferred_username": "ann",
            "groups": ["ops", "dev"]},
}


@pytest.fixture()
def op(tmp_path: Path) -> Iterator[Provider]:
    with start_provider(tmp_path, clients=CLIENTS, accounts=ACCOUNTS, jwks=make_jwks("key-1")) as provider:
        yield provider


def bastion_client(op: Provider, **cfg: Any) -> OidcClient:
    model = OidcModel(issuer=op.issuer, client_id="bastion", jwks_min_refresh=cfg.pop("jwks_min_refresh", 0), **cfg)
    return OidcClient(model, SECRET)


def user_signs_in(code: DeviceCode, login: str = "ann", *, approve: bool = True,
                  delay: float = 0.3) -> threading.Thread:
    """The user, in another thread: after ``delay``, enters the code at the provider and allows (or denies)."""
    errors: list[BaseException] = []

    def run() -> None:
        time.sleep(delay)
        try:
            complete_device_flow(code.verification_uri, code.user_code, login, ACCOUNTS[login]["password"],
                                 approve=approve)
        except BaseException as e:  # noqa: BLE001 - reported by the caller's join
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.errors = errors  # type: ignore[attr-defined]
    t.start()
    return t


def joined(t: threading.Thread) -> None:
    t.join(30)
    assert not t.is_alive(), "the scripted browser hung"
    assert not t.errors, t.errors  # type: ignore[attr-defined]


async def sign_in(client: OidcClient, login: str = "ann") -> tuple[Identity, dict[str, Any]]:
    code = await client.start_device_flow()
    t = user_signs_in(code, login)
    token = await client.poll(code)
    joined(t)
    return await client.identity(token), token


def forge(claims: dict[str, Any], key: dict[str, Any], alg: str = "RS256") -> str:
    """An ID token signed with ``key`` (a private JWK set), as an attacker holding that key would make it."""
    keys = KeySet.import_key_set(key)  # type: ignore[arg-type]
    k = keys.keys[0]
    return jwt.encode({"alg": alg, "kid": k.kid}, claims, k, algorithms=[alg])


async def test_device_flow_success_and_identity(op: Provider) -> None:
    client = bastion_client(op)
    identity, token = await sign_in(client)
    assert identity.issuer == op.issuer and identity.subject == "sub-ann"
    assert identity.username == "ann" and identity.email == "ann@example.test"
    assert identity.groups == ("ops", "dev")
    claims = await client.verify_id_token(token["id_token"])
    assert claims["aud"] == "bastion" and claims["iss"] == op.issuer


async def test_denial_ends_the_flow(op: Provider) -> None:
    client = bastion_client(op)
    code = await client.start_device_flow()
    t = user_signs_in(code, approve=False)
    with pytest.raises(DeviceFlowError) as e:
        await client.poll(code)
    joined(t)
    assert e.value.code == "access_denied" and "declined" in e.value.message


async def test_expiry_reported_by_the_provider_and_by_the_deadline(op: Provider) -> None:
    op.restart(device_code_ttl=2)
    client = bastion_client(op)
    code = await client.start_device_flow()
    assert code.expires_in <= 2
    # the provider expires the code; the bastion stops at the announced lifetime without another poll
    t0 = time.monotonic()
    with pytest.raises(DeviceFlowError) as e:
        await client.poll(code)
    assert e.value.code == "timeout" and time.monotonic() - t0 < 4
    # a provider that expires codes sooner than it said: its expired_token ends the flow
    longer = DeviceCode(code.device_code, code.user_code, code.verification_uri, None, expires_in=60, interval=1)
    with pytest.raises(DeviceFlowError) as e:
        await client.poll(longer)
    assert e.value.code == "expired_token" and "expired" in e.value.message


async def test_slow_down_from_the_provider_is_honoured(op: Provider) -> None:
    # polls closer than 3 s apart get slow_down; the bastion then adds 5 s to its interval and succeeds
    op.restart(interval=1, min_poll_interval=3, slow_down_increment=2)
    client = bastion_client(op)
    code = await client.start_device_flow()
    t = user_signs_in(code, delay=2.5)
    t0 = time.monotonic()
    token = await client.poll(code)
    joined(t)
    assert "id_token" in token
    assert time.monotonic() - t0 >= 1 + 5  # one slow_down: the next poll waited interval + 5 s
    assert op.log().count("slow_down") == 1  # after it, the bastion never polled too fast again


async def test_token_for_another_audience_is_refused(op: Provider) -> None:
    # a real token from the same provider, issued to another client
    auth = device_authorize(op.issuer, "other-app", "openid groups")
    complete_device_flow(auth["verification_uri"], auth["user_code"], "ann", "ann-pw")
    other = poll_token(op.issuer, "other-app", auth["device_code"])
    assert "id_token" in other, other
    client = bastion_client(op)
    with pytest.raises(OidcError, match="another client"):
        await client.verify_id_token(other["id_token"])
    with pytest.raises(OidcError):
        await client.identity(other)


async def test_unknown_signing_key_is_refused(op: Provider) -> None:
    client = bastion_client(op, jwks_min_refresh=30)
    _, token = await sign_in(client)  # JWKS cached
    claims = await client.verify_id_token(token["id_token"])
    now = int(time.time())
    good = {**claims, "iat": now, "exp": now + 300}
    # a key the provider never published, under a new kid and under the provider's own kid
    with pytest.raises(OidcError, match="does not publish"):
        await client.verify_id_token(forge(good, make_jwks("attacker-key")))
    with pytest.raises(OidcError, match="does not verify"):
        await client.verify_id_token(forge(good, make_jwks("key-1")))
    # the provider's own key, but an algorithm outside the allow-list
    ps = {"keys": [{**op.jwks["keys"][0], "alg": "RS512"}]}
    with pytest.raises(OidcError, match="not allowed"):
        await client.verify_id_token(forge(good, ps, alg="RS512"))
    # and the real, untouched token still verifies
    assert (await client.verify_id_token(token["id_token"]))["sub"] == "sub-ann"


async def test_key_rotation_refetches_the_jwks(op: Provider) -> None:
    client = bastion_client(op, jwks_min_refresh=0)
    identity, token = await sign_in(client)
    assert jwt.decode(token["id_token"], KeySet.import_key_set(op.jwks)).header["kid"] == "key-1"  # type: ignore
    # the provider rotates: a new key signs, the old one is still published for a while
    op.restart(jwks={"keys": make_jwks("key-2")["keys"] + op.jwks["keys"]})
    identity2, token2 = await sign_in(client)  # same OidcClient: its cached JWKS has no key-2
    assert jwt.decode(token2["id_token"], KeySet.import_key_set(op.jwks)).header["kid"] == "key-2"  # type: ignore
    assert identity2.subject == identity.subject
    # the old key retired: tokens it signed no longer verify once the JWKS is refetched
    op.restart(jwks={"keys": op.jwks["keys"][:1]})
    fresh = bastion_client(op)
    with pytest.raises(OidcError, match="does not publish"):
        await fresh.verify_id_token(token["id_token"])


async def test_groups_from_userinfo_when_the_id_token_has_none(op: Provider) -> None:
    op.restart(groups_in_id_token=False)
    client = bastion_client(op)
    identity, token = await sign_in(client)
    claims = await client.verify_id_token(token["id_token"])
    assert "groups" not in claims  # so they came from userinfo
    assert identity.groups == ("ops", "dev") and identity.username == "ann"

