"""A real OpenID Provider for tests (npm ``oidc-provider``, run by ``bastion/demo/oidc/provider.mjs``, the one the demo
starts) and a scripted browser.

``start_provider`` writes the provider's JSON config and starts it on 127.0.0.1; ``complete_device_flow`` plays the
user at the verification page (user code, login, consent). The config file has this shape::

    {"clients": [{"client_id": "bastion", "client_secret": "s3cret"},   # no secret: a public client ("none")
                 {"client_id": "cli", "refresh_token": false}],         # optional: no refresh_token grant
     "accounts": {"alice": {"password": "pw", "sub": "u-1", "email": "alice@example.test", "groups": ["ops"]}},
     "jwks": {"keys": [<private JWKs with kid; the first one signs>]},
     "device_code_ttl": 600, "interval": 1, "groups_in_id_token": true,
     "min_poll_interval": 1, "slow_down_increment": 5}
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey

from tests.support.keys import free_port

OIDC_DIR = Path(__file__).resolve().parents[2] / "bastion" / "demo" / "oidc"  # shared with `bastion demo`
PROVIDER_JS = OIDC_DIR / "provider.mjs"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
HOST = "127.0.0.1"
CONFIG_KEYS = {"clients", "accounts", "jwks", "device_code_ttl", "interval", "groups_in_id_token", "min_poll_interval",
               "slow_down_increment"}


# -- keys ----------------------------------------------------------------------------------------------------------

def make_jwks(kid: str, alg: str = "RS256") -> dict[str, Any]:
    """A private JWK set with one new signing key (RS256/PS256: RSA 2048, ES256: P-256, EdDSA: Ed25519)."""
    params = {"kid": kid, "alg": alg, "use": "sig"}
    if alg in ("RS256", "PS256"):
        key: RSAKey | ECKey | OKPKey = RSAKey.generate_key(2048, parameters=params, private=True)
    elif alg == "ES256":
        key = ECKey.generate_key("P-256", parameters=params, private=True)
    elif alg in ("EdDSA", "Ed25519"):
        key = OKPKey.generate_key("Ed25519", parameters=params, private=True)
    else:
        raise ValueError(f"unsupported alg {alg!r} (RS256, PS256, ES256, EdDSA)")
    return {"keys": [key.as_dict(private=True)]}


def public_jwks(private: dict[str, Any]) -> dict[str, Any]:
    """The public half of a JWK set (what the provider publishes at its jwks_uri)."""
    return KeySet.import_key_set(private).as_dict(private=False)  # type: ignore[arg-type]


# -- the provider process --------------------------------------------------------------------------------------------

@dataclass
class Provider:
    """A running provider; ``restart`` keeps the port (and so the issuer) and forgets all sessions and codes."""

    dir: Path
    port: int
    config: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)
    config_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.dir / f"oidc-provider-{self.port}.log"
        self.config_path = self.dir / f"oidc-provider-{self.port}.json"

    @property
    def issuer(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def jwks(self) -> dict[str, Any]:
        """The private JWK set the provider signs with."""
        return self.config["jwks"]

    def log(self) -> str:
        """Everything the provider printed (one access-log line per request, on stderr)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 20) -> None:
        self.config_path.write_text(json.dumps(self.config, indent=2))
        offset = len(self.log())  # the log is appended to across restarts
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(["node", str(PROVIDER_JS), str(self.config_path), str(self.port)],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         cwd=OIDC_DIR, start_new_session=True)
        ready = f"READY {self.issuer}\n"
        deadline = time.monotonic() + timeout
        while ready not in self.log()[offset:]:
            if self.proc.poll() is not None:
                raise RuntimeError(f"oidc-provider exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"oidc-provider did not get ready on {self.port}:\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self, **changes: Any) -> Provider:
        """Stop, apply config ``changes`` (e.g. ``jwks=make_jwks("k2")``), start again on the same port."""
        unknown = set(changes) - CONFIG_KEYS
        if unknown:
            raise TypeError(f"not provider settings: {', '.join(sorted(unknown))}")
        self.stop()
        self.config.update(changes)
        self.start()
        return self

    def __enter__(self) -> Provider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_provider(tmp_dir: Path, *, clients: list[dict[str, Any]], accounts: dict[str, dict[str, Any]],
                   jwks: dict[str, Any] | None = None, device_code_ttl: int = 600, interval: int = 1,
                   groups_in_id_token: bool = True, port: int | None = None, min_poll_interval: float | None = None,
                   slow_down_increment: float = 5) -> Provider:
    """Start ``bastion/demo/oidc/provider.mjs`` on 127.0.0.1 and wait until it listens.

    ``clients``: ``[{"client_id", "client_secret"?}]`` (no secret: public client); ``accounts``:
    ``{login: {"password", "sub", "email"?, "preferred_username"?, "groups"?}}``; ``jwks``: private JWK set
    (default: a new RS256 key ``kid="key-1"``). ``interval`` is advertised in the device authorization
    response. A poll of a pending code sooner than max(``min_poll_interval`` (default ``interval``),
    ``interval`` + ``slow_down_increment`` x the slow_downs that code already got) after its previous poll
    answers ``slow_down``; the first poll never does.
    """
    if shutil.which("node") is None:
        raise RuntimeError("node is not installed: run scripts/setup --test")
    if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        raise RuntimeError(f"{OIDC_DIR / 'node_modules'} is missing: run scripts/setup --test")
    config: dict[str, Any] = {
        "clients": clients, "accounts": accounts, "jwks": jwks if jwks is not None else make_jwks("key-1"),
        "device_code_ttl": device_code_ttl, "interval": interval, "groups_in_id_token": groups_in_id_token,
        "slow_down_increment": slow_down_increment,
    }
    if min_poll_interval is not None:
        config["min_poll_interval"] = min_poll_interval
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    provider = Provider(tmp_dir, port or free_port(), config)
    provider.start()
    return provider


# -- the device flow, client side (plain HTTP) ----------------------------------------------------------------------

def discovery(issuer: str) -> dict[str, Any]:
    """The provider's ``/.well-known/openid-configuration``."""
    r = httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=10)
    r.raise_for_status()
    return r.json()


def _client_auth(client_id: str, client_secret: str | None) -> tuple[dict[str, str], httpx.BasicAuth | None]:
    if client_secret is None:
        return {"client_id": client_id}, None
    return {}, httpx.BasicAuth(client_id, client_secret)


def device_authorize(issuer: str, client_id: str, scope: str, client_secret: str | None = None) -> dict[str, Any]:
    """POST to the device authorization endpoint; its JSON (``device_code``, ``user_code``, ... or ``error``)."""
    data, auth = _client_auth(client_id, client_secret)
    r = httpx.post(discovery(issuer)["device_authorization_endpoint"], data={**data, "scope": scope}, auth=auth,
                   timeout=10)
    return r.json()


def poll_token(issuer: str, client_id: str, device_code: str, client_secret: str | None = None) -> dict[str, Any]:
    """One device-code request at the token endpoint; its JSON, tokens or ``{"error": ...}``."""
    data, auth = _client_auth(client_id, client_secret)
    r = httpx.post(discovery(issuer)["token_endpoint"], auth=auth, timeout=10,
                   data={**data, "grant_type": DEVICE_GRANT, "device_code": device_code})
    return r.json()


def userinfo(issuer: str, access_token: str) -> dict[str, Any]:
    """The userinfo claims for an access token (raises for an HTTP error)."""
    r = httpx.get(discovery(issuer)["userinfo_endpoint"], headers={"Authorization": f"Bearer {access_token}"},
                  timeout=10)
    r.raise_for_status()
    return r.json()


# -- the device flow, user side (a scripted browser) ----------------------------------------------------------------

@dataclass
class _Form:
    id: str | None
    action: str
    fields: dict[str, str] = field(default_factory=dict)


def _submitted(attrs: dict[str, str]) -> bool:
    """Whether a browser sends this <input> with its form (buttons only when clicked, boxes only when checked)."""
    kind = attrs.get("type", "text").lower()
    return kind not in ("submit", "button", "image", "reset", "checkbox", "radio") or "checked" in attrs


class _Page(HTMLParser):
    """Forms (with their named inputs) and visible text of an HTML page."""

    def __init__(self, html: str):
        super().__init__()
        self.forms: list[_Form] = []
        self.ids: set[str] = set()
        self._text: list[str] = []
        self._current: _Form | None = None
        self._skip = 0
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        if tag in ("script", "style"):
            self._skip += 1
        elif tag == "form":
            self._current = _Form(a.get("id"), a.get("action", ""))
            self.forms.append(self._current)
        elif tag == "input" and self._current is not None and a.get("name") and _submitted(a):
            self._current.fields[a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag == "form":
            self._current = None

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self._text.append(data.strip())

    @property
    def text(self) -> str:
        return " ".join(self._text)

    def form(self, form_id: str) -> _Form | None:
        return next((f for f in self.forms if f.id == form_id), None)


def _expect(r: httpx.Response, step: str, *form_ids: str) -> tuple[_Page, _Form]:
    page = _Page(r.text)
    for form_id in form_ids:
        if (form := page.form(form_id)) is not None:
            return page, form
    raise AssertionError(f"{step}: expected a form {' or '.join(form_ids)} at {r.url} (HTTP {r.status_code}); "
                         f"the page says: {page.text!r}")


def _submit(http: httpx.Client, r: httpx.Response, form: _Form, **fields: str) -> httpx.Response:
    return http.post(urljoin(str(r.url), form.action), data={**form.fields, **fields})


def complete_device_flow(verification_uri: str, user_code: str, login: str, password: str, *,
                         approve: bool = True) -> None:
    """Be the user's browser: enter ``user_code`` at ``verification_uri``, confirm, log in, then allow or deny.

    ``verification_uri`` may be the ``verification_uri_complete`` (the code is then taken from it). Raises
    AssertionError, with the page's text, when a step does not show what it should.
    """
    with httpx.Client(follow_redirects=True, timeout=10) as http:
        r = http.get(verification_uri)
        if "user_code" in parse_qs(urlsplit(verification_uri).query):
            # verification_uri_complete: a self-submitting form that carries the code (and the xsrf token)
            page = _Page(r.text)
            form = next((f for f in page.forms if "user_code" in f.fields), None)
            if form is None:
                raise AssertionError(f"verification page: no form carries the user code at {r.url}; "
                                     f"the page says: {page.text!r}")
            r = _submit(http, r, form)
        else:
            _, form = _expect(r, "verification page", "op.deviceInputForm")
            r = _submit(http, r, form, user_code=user_code)
        _, form = _expect(r, "user code", "op.deviceConfirmForm")
        r = _submit(http, r, form)  # carries confirm=yes
        _, form = _expect(r, "device confirmation", "login-form")
        r = _submit(http, r, form, login=login, password=password)
        page, form = _expect(r, "login", "consent-form" if approve else "deny-form")
        r = _submit(http, r, form)
        page = _Page(r.text)
        done = "success" in page.ids if approve else "The sign-in request was denied" in page.text
        if r.status_code != 200 or not done:
            raise AssertionError(f"{'consent' if approve else 'denial'}: unexpected result at {r.url} "
                                 f"(HTTP {r.status_code}); the page says: {page.text!r}")

