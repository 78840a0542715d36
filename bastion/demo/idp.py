"""The demo's identity provider: the pinned npm ``oidc-provider`` (``bastion/demo/oidc/provider.mjs``, the one the
tests run too) on a free port of 127.0.0.1, with one demo person, ``dave`` (group ``ops``), so that ``bastion demo``
shows the OIDC sign-in end to end.

Its secrets live in the state dir, 0600, and are reused by the next run: dave's password (``secrets/dave.pw``),
the bastion's client secret (``secrets/oidc-client.secret``, read by the daemon through ``client_secret_file``),
the provider's signing key (``oidc/jwks.json``) and the provider's config that holds them (``oidc/provider.json``).
None of them is on a command line or in an environment. The provider holds its stdin from the demo and stops when
that closes (and gets SIGTERM when the demo dies: a parent-death signal), so a demo killed with kill -9 leaves no
provider behind.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bastion.demo.lifeline import die_with_demo

PROVIDER_DIR = Path(__file__).resolve().parent / "oidc"
PERSON = "dave"
GROUPS = ["ops"]
CLIENT_ID = "bastion-demo"
CLIENT_SECRET_FILE = "secrets/oidc-client.secret"  # noqa: S105 - a path; relative to the state dir (and so to bastion.yaml)
MIN_NODE = (20, 12)  # oidc-provider 9 uses crypto.hash
Record = Callable[[str, int, int], None]  # told (name, pid, stop signal) of a process the demo started
READY = re.compile(r"^READY (http://127\.0\.0\.1:\d+)$", re.M)


class IdpUnavailable(Exception):
    """Why the demo's sign-in is off (one line, for the banner)."""


def _secret_file(path: Path, make: str) -> str:
    """The first line of ``path``, written (0600) with ``make`` first if it does not exist."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(make + "\n")
    return path.read_text().strip()


def _private_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` readable by this user only (a new file each time: the mode is never wider)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    tmp.replace(path)


def _signing_keys(path: Path) -> dict[str, Any]:
    """The provider's private JWK set (one RS256 key), made on the first run."""
    if not path.exists():
        from joserfc.jwk import RSAKey

        key = RSAKey.generate_key(2048, parameters={"kid": "demo-1", "alg": "RS256", "use": "sig"}, private=True)
        _private_json(path, {"keys": [key.as_dict(private=True)]})
    keys: dict[str, Any] = json.loads(path.read_text())
    return keys


def _check_node() -> str:
    """The path of ``node`` when it can run the provider; IdpUnavailable with what is missing otherwise."""
    node = shutil.which("node")
    if node is None:
        raise IdpUnavailable("Node.js is not installed (scripts/setup --demo installs it)")
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
        version = tuple(int(n) for n in out.lstrip("v").split(".")[:2])
    except (OSError, ValueError, subprocess.TimeoutExpired):
        raise IdpUnavailable(f"{node} --version did not answer a version") from None
    if version < MIN_NODE:
        raise IdpUnavailable(f"Node.js {out} is too old (oidc-provider needs >= {MIN_NODE[0]}.{MIN_NODE[1]})")
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        raise IdpUnavailable(f"oidc-provider is not installed in {PROVIDER_DIR} (scripts/setup --demo runs npm ci "
                             "there)")
    return node


@dataclass
class DemoIdp:
    """A running provider: its issuer, dave's password, and where the provider's log goes."""

    issuer: str
    password: str
    log_path: Path
    proc: subprocess.Popen[bytes]
    stdin: IO[bytes]

    def stop(self) -> None:
        """Close its stdin (it shuts down), then SIGTERM and SIGKILL if it lingers."""
        try:
            self.stdin.close()
        except OSError:
            pass
        for step in (self.proc.wait, self.proc.terminate, self.proc.kill):
            if self.proc.poll() is not None:
                return
            if step is not self.proc.wait:
                step()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def curl_lines(self) -> list[str]:
        """A shell sequence that completes a device sign-in as dave with curl (for a box without a browser): set
        CODE to the code on the sign-in screen, then paste the rest. Each step checks for the page it expects."""
        u, pw = self.issuer, shlex.quote(self.password)
        return [
            "CODE=XXXX-XXXX   # the code the sign-in screen shows",
            f"J=$(mktemp); c() {{ curl -sS -b $J -c $J -L \"$@\"; }}; U={u}",
            "x() { sed -n 's/.*name=\"xsrf\" value=\"\\([^\"]*\\)\".*/\\1/p' | head -n1; }",
            "X=$(c $U/device | x) && X=$(c $U/device -d xsrf=$X -d user_code=$CODE | x) && \\",
            "L=$(c $U/device -d xsrf=$X -d user_code=$CODE -d confirm=yes -o /dev/null -w '%{url_effective}') && \\",
            f"C=$(c $L/login -d login={PERSON} -d password={pw} -o /dev/null -w '%{{url_effective}}') && \\",
            "c $C/consent -d approve=yes | grep -o 'You are signed in[^;]*' || echo 'not signed in: check CODE'; "
            "rm -f $J",
        ]


def start_idp(state: Path, log_dir: Path, timeout: float = 30, record: Record | None = None) -> DemoIdp:
    """Start the provider for ``state`` (logging to ``log_dir/oidc-provider.log``) and wait until it listens;
    IdpUnavailable, with why, when this machine cannot run it or it does not start. ``record(name, pid, stop
    signal)`` is told its process as soon as it exists."""
    node = _check_node()
    password = _secret_file(state / "secrets" / f"{PERSON}.pw", secrets.token_urlsafe(12))
    client_secret = _secret_file(state / CLIENT_SECRET_FILE, secrets.token_urlsafe(32))
    base = state / "oidc"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = {
        "clients": [{"client_id": CLIENT_ID, "client_secret": client_secret, "client_name": "bastion demo"}],
        "accounts": {PERSON: {"password": password, "sub": f"demo-{PERSON}", "preferred_username": PERSON,
                              "email": f"{PERSON}@demo.invalid", "groups": GROUPS}},
        "jwks": _signing_keys(base / "jwks.json"),
        "device_code_ttl": 600, "interval": 1, "exit_with_stdin": True,
    }
    config_path = base / "provider.json"
    _private_json(config_path, config)
    log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # the issuer names dave's bastion account: the same port as last time keeps it "dave" (a new issuer's dave would
    # get a name of his own, dave-1a2b3c), any free port when that one is taken
    port_file = base / "port"
    try:
        last = int(port_file.read_text())
    except (OSError, ValueError):
        last = 0
    try:
        idp = _launch(node, config_path, log_dir / "oidc-provider.log", last, password, timeout, record)
    except IdpUnavailable:
        if not last:
            raise
        idp = _launch(node, config_path, log_dir / "oidc-provider.log", 0, password, timeout, record)
    port_file.write_text(idp.issuer.rsplit(":", 1)[1] + "\n")
    return idp


def _launch(node: str, config_path: Path, log_path: Path, port: int, password: str, timeout: float,
            record: Record | None) -> DemoIdp:
    offset = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as out:
        try:
            proc = subprocess.Popen([node, str(PROVIDER_DIR / "provider.mjs"), str(config_path), str(port)],
                                    stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, cwd=PROVIDER_DIR,
                                    start_new_session=True, preexec_fn=die_with_demo(signal.SIGTERM))  # noqa: PLW1509
        except OSError as e:
            raise IdpUnavailable(f"the identity provider did not start: {e}") from None
    if record is not None:
        record("oidc-provider", proc.pid, signal.SIGTERM)
    assert proc.stdin is not None
    idp = DemoIdp("", password, log_path, proc, proc.stdin)
    deadline = time.monotonic() + timeout
    while True:
        with open(log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        if m := READY.search(text):
            idp.issuer = m.group(1)
            return idp
        if proc.poll() is not None or time.monotonic() > deadline:
            idp.stop()
            last = [line for line in text.splitlines() if line.strip()][-1:] or ["no output"]
            why = (f"exited with status {proc.returncode}" if proc.returncode is not None
                   else f"was not ready in {timeout:g} s")
            raise IdpUnavailable(f"the identity provider {why}: {last[0][:200]} (see {log_path})")
        time.sleep(0.05)
