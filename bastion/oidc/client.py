"""Talking to the OpenID Provider: discovery, JWKS, the device authorization grant, ID token checks, userinfo.

HTTP with httpx; token requests built with authlib's OAuth 2 pieces (RFC 6749 request body, client authentication),
not its httpx integration (deprecated in favour of httpx2: importing it warns on every run); JOSE with joserfc (no
hand-written signature checks). Nothing here logs a code or a token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749.parameters import prepare_token_request
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from bastion.config import OidcModel
from bastion.oidc.device import DeviceFlowError, PollSchedule

log = logging.getLogger(__name__)
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
TOKEN_HEADERS = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded;charset=UTF-8"}


class OidcError(Exception):
    """The provider could not be used, or a token failed a check (the message says which, never the token)."""


@dataclass(frozen=True)
class DeviceCode:
    """What the user needs (``user_code``, ``verification_uri``) and what we poll with (``device_code``)."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float


@dataclass(frozen=True)
class Identity:
    """A signed-in person: keyed by (issuer, subject), never by email."""

    issuer: str
    subject: str
    username: str  # the claim configured as username_claim (sanitised later), for display and audit
    email: str | None
    groups: tuple[str, ...]


class OidcClient:
    """One per daemon; caches discovery and JWKS."""

    def __init__(self, cfg: OidcModel, client_secret: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.cfg = cfg
        self._transport = transport  # tests only: an in-memory provider
        self.issuer = cfg.issuer.rstrip("/")
        self._secret = client_secret
        self._meta: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._keys_fetched = 0.0
        self._lock = asyncio.Lock()

    def _http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self.cfg.http_timeout, follow_redirects=False, transport=self._transport)

    async def _token_request(self, http: httpx.AsyncClient, url: str, grant_type: str,
                             **params: str) -> dict[str, Any]:
        """One request to the token endpoint: the JSON object it answered, an OAuth error (``error``) included.
        The client authenticates with HTTP Basic when it has a secret, else names itself in the body. Raises
        httpx.HTTPError or ValueError for an answer that is no token response (a 5xx, a gateway's HTML page)."""
        body = prepare_token_request(grant_type, **params)
        auth = ClientAuth(self.cfg.client_id, self._secret, "client_secret_basic" if self._secret else "none")
        _, headers, body = auth.prepare("POST", url, dict(TOKEN_HEADERS), body)
        r = await http.post(url, content=body.encode(), headers=headers)
        if r.status_code >= 500:
            r.raise_for_status()
        token = r.json()
        if not isinstance(token, dict):
            raise ValueError(f"token endpoint answered {r.status_code} without a JSON object")
        return token

    async def _get_json(self, url: str, **kw: Any) -> dict[str, Any]:
        try:
            async with self._http() as http:
                r = await http.get(url, **kw)
        except httpx.HTTPError as e:
            raise OidcError(f"cannot reach the identity provider ({type(e).__name__})") from None
        if r.status_code != 200:
            raise OidcError(f"the identity provider answered {r.status_code} for {url}")
        try:
            data = r.json()
        except ValueError:
            raise OidcError(f"the identity provider sent no JSON for {url}") from None
        if not isinstance(data, dict):
            raise OidcError(f"the identity provider sent unexpected JSON for {url}")
        return data

    async def metadata(self) -> dict[str, Any]:
        """The discovery document (fetched once; its issuer must be ours exactly)."""
        if self._meta is None:
            meta = await self._get_json(f"{self.issuer}/.well-known/openid-configuration")
            if meta.get("issuer", "").rstrip("/") != self.issuer:
                raise OidcError("the discovery document names another issuer")
            for k in ("token_endpoint", "jwks_uri", "device_authorization_endpoint"):
                if not isinstance(meta.get(k), str):
                    raise OidcError(f"the identity provider does not offer {k}")
            self._meta = meta
        return self._meta

    async def keys(self, kid: str | None = None) -> KeySet:
        """The provider's signing keys; refetched (at most every ``jwks_min_refresh`` s) for an unknown ``kid``."""
        async with self._lock:
            known = self._keys is not None and (kid is None or _has_kid(self._keys, kid))
            stale = time.monotonic() - self._keys_fetched >= self.cfg.jwks_min_refresh
            if self._keys is None or (not known and stale):
                meta = await self.metadata()
                data = await self._get_json(meta["jwks_uri"])
                try:
                    self._keys = KeySet.import_key_set(data)  # type: ignore[arg-type]
                except (JoseError, ValueError, TypeError, KeyError) as e:
                    raise OidcError(f"the identity provider's JWKS is unusable ({e})") from None
                self._keys_fetched = time.monotonic()
            assert self._keys is not None
            return self._keys

    # -- device authorization grant -------------------------------------------------------------------------
    async def start_device_flow(self) -> DeviceCode:
        meta = await self.metadata()
        data = {"client_id": self.cfg.client_id, "scope": " ".join(self.cfg.scopes)}
        auth = (self.cfg.client_id, self._secret) if self._secret else None
        try:
            async with self._http() as http:
                r = await http.post(meta["device_authorization_endpoint"], data=data, auth=auth)  # type: ignore[arg-type]
        except httpx.HTTPError as e:
            raise OidcError(f"cannot reach the identity provider ({type(e).__name__})") from None
        try:
            body = r.json()
        except ValueError:
            body = {}
        if r.status_code != 200 or not isinstance(body, dict) or "device_code" not in body:
            raise OidcError(f"the identity provider refused the device authorization ({r.status_code}, "
                            f"{body.get('error', '?') if isinstance(body, dict) else '?'})")
        try:
            return DeviceCode(str(body["device_code"]), str(body["user_code"]), str(body["verification_uri"]),
                              body.get("verification_uri_complete"), float(body.get("expires_in", 600)),
                              max(1.0, float(body.get("interval", 5))))
        except (KeyError, TypeError, ValueError):
            raise OidcError("the identity provider's device authorization answer is incomplete") from None

    async def poll(self, code: DeviceCode, *, timeout: float | None = None,
                   cancelled: asyncio.Event | None = None) -> dict[str, Any]:
        """Poll the token endpoint until the user finishes; the token response, or DeviceFlowError."""
        meta = await self.metadata()
        limit = min(code.expires_in, timeout or self.cfg.login_timeout)
        sched = PollSchedule(interval=code.interval, expires_at=time.monotonic() + limit)
        delay = sched.interval
        async with self._http() as http:
            while True:
                wait = min(delay, max(0.0, sched.expires_at - time.monotonic()))
                if cancelled is not None:
                    try:
                        await asyncio.wait_for(cancelled.wait(), wait)
                        raise DeviceFlowError("cancelled", "the sign-in was cancelled")
                    except TimeoutError:
                        pass
                else:
                    await asyncio.sleep(wait)
                sched.check(time.monotonic())
                try:
                    token = await self._token_request(http, meta["token_endpoint"], DEVICE_GRANT,
                                                      device_code=code.device_code)
                except (httpx.HTTPError, ValueError) as e:
                    log.warning("token endpoint: %s; backing off", type(e).__name__)
                    delay = sched.next_delay("transient")
                    continue
                error = token.get("error")
                if error is None:
                    return token
                if error == "authorization_pending":
                    delay = sched.next_delay("pending")
                elif error == "slow_down":
                    delay = sched.next_delay("slow_down")
                else:
                    raise PollSchedule.terminal(str(error))

    # -- ID token -------------------------------------------------------------------------------------------
    async def verify_id_token(self, token: str) -> dict[str, Any]:
        """Claims of a valid ID token: allowed algorithm, signature by a provider key, iss, aud/azp, exp, iat."""
        try:
            header = jws.extract_compact(token.encode()).protected
        except (JoseError, ValueError, TypeError) as e:
            raise OidcError(f"the ID token is malformed ({type(e).__name__})") from None
        alg = header.get("alg")
        if alg not in self.cfg.algorithms:
            raise OidcError(f"the ID token is signed with {alg!r}, which is not allowed")
        kid = header.get("kid")
        keys = await self.keys(kid)
        if kid is not None and not _has_kid(keys, kid):
            raise OidcError("the ID token is signed with a key the identity provider does not publish")
        try:
            decoded = jwt.decode(token, keys, algorithms=list(self.cfg.algorithms))
        except (JoseError, ValueError) as e:
            raise OidcError(f"the ID token signature does not verify ({type(e).__name__})") from None
        claims = decoded.claims
        leeway = int(self.cfg.leeway)
        registry = jwt.JWTClaimsRegistry(leeway=leeway, iss={"essential": True, "value": self.issuer},
                                         sub={"essential": True}, exp={"essential": True}, iat={"essential": True})
        try:
            registry.validate(claims)
        except JoseError as e:
            raise OidcError(f"the ID token failed a claim check ({e.error}: {e.description or ''})") from None
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else list(aud) if isinstance(aud, list) else []
        if self.cfg.client_id not in auds:
            raise OidcError("the ID token was issued for another client (aud)")
        if (len(auds) > 1 or "azp" in claims) and claims.get("azp") != self.cfg.client_id:
            raise OidcError("the ID token was issued to another party (azp)")
        if float(claims["iat"]) > time.time() + leeway:
            raise OidcError("the ID token is issued in the future (iat)")
        return claims

    async def userinfo(self, access_token: str) -> dict[str, Any]:
        meta = await self.metadata()
        url = meta.get("userinfo_endpoint")
        if not isinstance(url, str):
            return {}
        return await self._get_json(url, headers={"Authorization": f"Bearer {access_token}"})

    async def identity(self, token: dict[str, Any]) -> Identity:
        """The identity in a token response (groups from the ID token, else from userinfo for the same sub)."""
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise OidcError("the identity provider returned no ID token")
        claims = await self.verify_id_token(id_token)
        groups = claims.get(self.cfg.groups_claim)
        extra: dict[str, Any] = {}
        if groups is None and isinstance(token.get("access_token"), str):
            extra = await self.userinfo(token["access_token"])
            if extra.get("sub") != claims["sub"]:
                raise OidcError("userinfo is for another subject")
            groups = extra.get(self.cfg.groups_claim)
        if groups is None:
            groups = []
        if isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise OidcError(f"the {self.cfg.groups_claim!r} claim is not a list of strings")
        name = claims.get(self.cfg.username_claim) or extra.get(self.cfg.username_claim) or claims.get("email")
        return Identity(self.issuer, str(claims["sub"]), str(name or claims["sub"]),
                        claims.get("email") if isinstance(claims.get("email"), str) else None, tuple(groups))

    async def login(self, code: DeviceCode, *, cancelled: asyncio.Event | None = None) -> Identity:
        """Wait for the user to finish the device flow; their identity (DeviceFlowError or OidcError if not)."""
        token = await self.poll(code, cancelled=cancelled)
        return await self.identity(token)


def _has_kid(keys: KeySet, kid: str) -> bool:
    return any(k.kid == kid for k in keys.keys)


__all__ = ["DeviceCode", "DeviceFlowError", "Identity", "OidcClient", "OidcError"]
