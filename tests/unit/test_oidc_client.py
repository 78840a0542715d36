"""OIDC client logic against an in-memory provider (httpx MockTransport): device-flow polling (slow_down,
backoff, expiry, denial) and every ID token check. The real provider is exercised in tests/integration."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey

from bastion.config import OidcModel
from bastion.oidc.client import DeviceCode, OidcClient, OidcError
from bastion.oidc.device import SLOW_DOWN_STEP, DeviceFlowError, PollSchedule

ISSUER = "https://idp.example.test"


class FakeIdp:
    """Discovery, JWKS and a scripted token endpoint."""

    def __init__(self, keys: KeySet) -> None:
        self.keys = keys
        self.token_replies: list[tuple[int, dict[str, Any]]] = []
        self.jwks_fetches = 0
        self.token_calls: list[float] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={"issuer": ISSUER, "token_endpoint": f"{ISSUER}/token",
                                             "jwks_uri": f"{ISSUER}/jwks",
                                             "device_authorization_endpoint": f"{ISSUER}/device/auth",
                                             "userinfo_endpoint": f"{ISSUER}/me"})
        if path == "/jwks":
            self.jwks_fetches += 1
            return httpx.Response(200, json=self.keys.as_dict(private=False))
        if path == "/token":
            self.token_calls.append(time.monotonic())
            status, body = self.token_replies.pop(0)
            return httpx.Response(status, json=body)
        if path == "/device/auth":
            return httpx.Response(200, json={"device_code": "dc", "user_code": "ABCD-EFGH", "expires_in": 600,
                                             "verification_uri": f"{ISSUER}/device", "interval": 1})
        return httpx.Response(404)


def client(idp: FakeIdp, **cfg: Any) -> OidcClient:
    model = OidcModel(issuer=ISSUER, client_id="bastion", jwks_min_refresh=cfg.pop("jwks_min_refresh", 0), **cfg)
    return OidcClient(model, transport=httpx.MockTransport(idp.handler))


@pytest.fixture()
def rsa() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "k1"})


def token(key: Any, alg: str = "RS256", **claims: Any) -> str:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": "bastion", "sub": "user-1", "iat": now, "exp": now + 300,
            "preferred_username": "ann", "groups": ["ops"]}
    base.update(claims)
    base = {k: v for k, v in base.items() if v is not None}
    header = {"alg": alg}
    if getattr(key, "kid", None):
        header["kid"] = key.kid
    return jwt.encode(header, base, key, algorithms=[alg])


# -- polling ------------------------------------------------------------------------------------------------
def test_schedule_slow_down_adds_five_seconds_for_good() -> None:
    s = PollSchedule(interval=2)
    assert s.next_delay("pending") == 2
    assert s.next_delay("slow_down") == 2 + SLOW_DOWN_STEP
    assert s.next_delay("pending") == 2 + SLOW_DOWN_STEP  # it stays slower
    assert s.next_delay("slow_down") == 2 + 2 * SLOW_DOWN_STEP


def test_schedule_backs_off_on_transient_errors_and_recovers() -> None:
    s = PollSchedule(interval=5)
    delays = [s.next_delay("transient") for _ in range(6)]
    assert delays == [5, 10, 20, 40, 60, 60]  # exponential, capped, never below the interval
    assert s.next_delay("pending") == 5


def test_schedule_deadline() -> None:
    s = PollSchedule(interval=1, expires_at=100.0)
    s.check(99.0)
    with pytest.raises(DeviceFlowError) as e:
        s.check(100.0)
    assert e.value.code == "timeout"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_poll_honours_pending_slow_down_and_5xx(rsa: RSAKey, monkeypatch: pytest.MonkeyPatch) -> None:
    idp = FakeIdp(KeySet([rsa]))
    idp.token_replies = [(400, {"error": "authorization_pending"}), (400, {"error": "slow_down"}),
                         (503, {"error": "temporarily_unavailable"}), (200, {"access_token": "at",
                                                                            "token_type": "Bearer",
                                                                            "id_token": token(rsa)})]
    waits: list[float] = []

    async def fake_sleep(d: float) -> None:
        waits.append(round(d, 3))

    monkeypatch.setattr("bastion.oidc.client.asyncio.sleep", fake_sleep)
    code = DeviceCode("dc", "ABCD", f"{ISSUER}/device", None, 600, 2)
    ident = run(client(idp).login(code))
    assert waits == [2, 2, 2 + SLOW_DOWN_STEP, 2 + SLOW_DOWN_STEP]  # then the 5xx backed off to >= interval
    assert ident.subject == "user-1" and ident.groups == ("ops",) and ident.username == "ann"


@pytest.mark.parametrize(("error", "code"), [("access_denied", "access_denied"), ("expired_token", "expired_token"),
                                             ("invalid_grant", "invalid_grant")])
def test_poll_terminal_errors(error: str, code: str, rsa: RSAKey, monkeypatch: pytest.MonkeyPatch) -> None:
    idp = FakeIdp(KeySet([rsa]))
    idp.token_replies = [(400, {"error": "authorization_pending"}), (400, {"error": error})]

    async def fake_sleep(d: float) -> None:
        return None

    monkeypatch.setattr("bastion.oidc.client.asyncio.sleep", fake_sleep)
    with pytest.raises(DeviceFlowError) as e:
        run(client(idp).poll(DeviceCode("dc", "ABCD", "u", None, 600, 1)))
    assert e.value.code == code and len(idp.token_calls) == 2


def test_poll_gives_up_at_its_own_deadline(rsa: RSAKey) -> None:
    idp = FakeIdp(KeySet([rsa]))
    idp.token_replies = [(400, {"error": "authorization_pending"})] * 10
    started = time.monotonic()
    with pytest.raises(DeviceFlowError) as e:
        run(client(idp).poll(DeviceCode("dc", "ABCD", "u", None, 1.5, 1)))
    assert e.value.code == "timeout" and time.monotonic() - started < 5


def test_device_authorization_is_parsed(rsa: RSAKey) -> None:
    code = run(client(FakeIdp(KeySet([rsa]))).start_device_flow())
    assert code.user_code == "ABCD-EFGH" and code.interval == 1 and code.expires_in == 600


# -- ID token checks ----------------------------------------------------------------------------------------
def test_valid_token(rsa: RSAKey) -> None:
    claims = run(client(FakeIdp(KeySet([rsa]))).verify_id_token(token(rsa)))
    assert claims["sub"] == "user-1"


@pytest.mark.parametrize(("claims", "why"), [
    ({"aud": "someone-else"}, "another client"),
    ({"aud": ["bastion", "other"], "azp": "other"}, "another party"),
    ({"aud": ["bastion", "other"]}, "another party"),  # several audiences and no azp
    ({"iss": "https://evil.example.test"}, "claim check"),
    ({"exp": int(time.time()) - 3600}, "claim check"),
    ({"iat": int(time.time()) + 3600}, "future"),
    ({"sub": None}, "claim check"),
])
def test_claim_checks(claims: dict[str, Any], why: str, rsa: RSAKey) -> None:
    with pytest.raises(OidcError, match=why):
        run(client(FakeIdp(KeySet([rsa]))).verify_id_token(token(rsa, **claims)))


def test_small_clock_skew_is_tolerated(rsa: RSAKey) -> None:
    c = client(FakeIdp(KeySet([rsa])), leeway=60)
    run(c.verify_id_token(token(rsa, iat=int(time.time()) + 30, exp=int(time.time()) - 30)))


def test_unknown_key_is_refused_and_refetched_at_most_so_often(rsa: RSAKey) -> None:
    idp = FakeIdp(KeySet([rsa]))
    c = client(idp, jwks_min_refresh=3600)
    run(c.verify_id_token(token(rsa)))
    stranger = RSAKey.generate_key(2048, parameters={"kid": "k-evil"})
    with pytest.raises(OidcError, match="does not publish"):
        run(c.verify_id_token(token(stranger)))
    with pytest.raises(OidcError, match="does not publish"):
        run(c.verify_id_token(token(stranger)))
    assert idp.jwks_fetches == 1  # rate limited: no refetch storm from forged kids


def test_rotation_refetches_the_jwks(rsa: RSAKey) -> None:
    idp = FakeIdp(KeySet([rsa]))
    c = client(idp, jwks_min_refresh=0)
    run(c.verify_id_token(token(rsa)))
    new = ECKey.generate_key("P-256", parameters={"kid": "k2"})
    idp.keys = KeySet([new])
    assert run(c.verify_id_token(token(new, alg="ES256")))["sub"] == "user-1"
    assert idp.jwks_fetches == 2


def test_same_kid_other_key_fails_the_signature(rsa: RSAKey) -> None:
    forged = RSAKey.generate_key(2048, parameters={"kid": "k1"})  # the provider's kid, not its key
    with pytest.raises(OidcError, match="signature"):
        run(client(FakeIdp(KeySet([rsa]))).verify_id_token(token(forged)))


@pytest.mark.parametrize("alg", ["HS256", "none"])
def test_algorithms_outside_the_allow_list(alg: str, rsa: RSAKey) -> None:
    idp = FakeIdp(KeySet([rsa]))
    if alg == "HS256":  # the classic confusion: an HMAC keyed with the public key
        bad = token(OctKey.import_key(json.dumps(rsa.as_dict(private=False)).encode()), alg="HS256")
    else:
        head = jwt.encode({"alg": "RS256"}, {"sub": "x"}, rsa).split(".")
        import base64

        none = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
        bad = f"{none}.{head[1]}."
    with pytest.raises(OidcError, match="not allowed"):
        run(client(idp).verify_id_token(bad))


def test_groups_from_userinfo_when_not_in_the_id_token(rsa: RSAKey) -> None:
    idp = FakeIdp(KeySet([rsa]))
    inner = idp.handler

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/me":
            assert request.headers["Authorization"] == "Bearer at"
            return httpx.Response(200, json={"sub": "user-1", "groups": ["dba", "ops"]})
        return inner(request)

    c = OidcClient(OidcModel(issuer=ISSUER, client_id="bastion"), transport=httpx.MockTransport(handler))
    ident = run(c.identity({"id_token": token(rsa, groups=None), "access_token": "at"}))
    assert ident.groups == ("dba", "ops")
