"""OIDC sign-in end to end: stock OpenSSH client -> bastion (config with ``oidc:``) -> the real npm
``oidc-provider``; the user's side of the device flow is played over HTTP by tests/support/oidc.py.

Covers the issue's done-when (a new key signs in through the TUI and lands in the menu with what its groups grant;
a second ``ssh`` with that key is silent), revocation, denial, expiry, groups granting nothing, exec from an
unbound key, the keyboard-interactive path (no key, no binding), and that local users keep working.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import BastionEnv, start_bastion, stop_bastion, write_config
from tests.support.keys import free_port, make_keypair
from tests.support.oidc import Provider, complete_device_flow, start_provider
from tests.support.ssh_client import ssh_argv
from tests.support.sshd import start_sshd
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow

SECRET = "the-bastion-client-secret-4711"
ACCOUNTS = {
    "ann": {"password": "ann-pw", "sub": "00u-ann", "email": "ann@example.test", "preferred_username": "ann",
            "groups": ["ops"]},
    "ben": {"password": "ben-pw", "sub": "00u-ben", "email": "ben@example.test", "preferred_username": "ben",
            "groups": ["marketing"]},
    # claims a local user's name: gets a name of its own, never the local account
    "impostor": {"password": "imp-pw", "sub": "00u-imp", "email": "alice@example.test",
                 "preferred_username": "alice", "groups": ["ops"]},
}
LOCALS = ("alice", "bob", "mallory", "carol", "dave")


@dataclass
class OidcEnv:
    env: BastionEnv
    op: Provider

    def new_key(self, name: str) -> Path:
        return make_keypair(self.env.dir / f"oidc_key_{name}_{free_port()}", name)[0]

    def ssh(self, key: Path, user: str, *extra: str, tty: bool | None = None) -> list[str]:
        return ssh_argv(key, self.env.port, user, *extra, tty=tty)

    def run(self, key: Path, user: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.ssh(key, user, *extra, tty=False), capture_output=True, text=True, timeout=60)

    def bindings(self, *args: str) -> list[dict]:
        out = self.env.bastion("keys", "list", "--json", *args)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def audit(self, action: str) -> list[tuple[str, str, dict]]:
        with sqlite3.connect(self.env.dir / "state" / "bastion.db") as db:
            rows = db.execute("SELECT actor, outcome, detail FROM audit_events WHERE action = ? ORDER BY id",
                              (action,)).fetchall()
        return [(a, o, json.loads(d)) for a, o, d in rows]


def oidc_section(op: Provider, secret_file: Path, **extra: object) -> str:
    settings = {"issuer": op.issuer, "client_id": "bastion", "client_secret_file": str(secret_file),
                "jwks_min_refresh": 1, **extra}
    return "oidc:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in settings.items())


def make_env(d: Path, op: Provider, **oidc: object) -> BastionEnv:
    (d / "state").mkdir(parents=True)
    keys = {u: make_keypair(d / f"key_{u}", u)[0] for u in LOCALS}
    target_key, target_pub = make_keypair(d / "target_credential", "bastion-credential")
    target = start_sshd(d / "sshd", authorized_keys=[target_pub])
    secret_file = d / "oidc-client-secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    port = free_port()
    cfg = write_config(d, port, keys, target, target_key, extra_top=oidc_section(op, secret_file, **oidc))
    log = d / "bastion.out"
    try:
        proc = start_bastion(cfg, port, log)
    except BaseException:
        target.stop()
        raise
    return BastionEnv(d, cfg, port, keys, target, target_key, proc, log)


def close_env(env: BastionEnv) -> None:
    stop_bastion(env.proc)
    env.target.stop()


@pytest.fixture(scope="module")
def oidc_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcEnv]:
    d = tmp_path_factory.mktemp("oidc-login")
    with start_provider(d / "op", clients=[{"client_id": "bastion", "client_secret": SECRET}],
                        accounts=ACCOUNTS) as op:
        env = make_env(d / "bastion", op)
        try:
            yield OidcEnv(env, op)
        finally:
            close_env(env)


def read_code(t: Terminal) -> tuple[str, str]:
    """The verification URL and user code from the sign-in screen."""
    t.wait_for(r"the code expires in \d+:\d\d")
    screen = t.screen_text()
    url = re.search(r"Open\s+(http://\S+)", screen)
    code = re.search(r"enter the code\s+(\S+)", screen)
    assert url and code, screen
    return url.group(1), code.group(1)


def browser(url: str, code: str, login: str, *, approve: bool = True) -> threading.Thread:
    """The user at another device; exceptions are kept on the thread for ``finish``."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            complete_device_flow(url, code, login, ACCOUNTS[login]["password"], approve=approve)
        except BaseException as e:  # noqa: BLE001 - re-raised by finish()
            errors.append(e)

    th = threading.Thread(target=run, daemon=True)
    th.errors = errors  # type: ignore[attr-defined]
    th.start()
    return th


def finish(th: threading.Thread) -> None:
    th.join(30)
    assert not th.is_alive() and not th.errors, th.errors  # type: ignore[attr-defined]


def fingerprint(key: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", f"{key}.pub"], capture_output=True, text=True,
                         check=True)
    return out.stdout.split()[1]


def test_sign_in_binds_the_key_then_ssh_is_silent_until_revoked(oidc_env: OidcEnv) -> None:
    o = oidc_env
    key = o.new_key("ann")
    with Terminal(o.ssh(key, "ann", tty=True), cols=120, rows=50) as t:
        url, code = read_code(t)
        assert url.startswith(o.op.issuer + "/")
        assert "█" in t.screen_text()  # the QR code
        finish(browser(url, code, "ann"))
        t.wait_for(r"ann · roles: operators", timeout=20)
        t.wait_for(r"real sshd on loopback")  # web: granted to operators (groups [ops])
        assert "secret-db" not in t.screen_text()
        t.send("q")
        assert t.wait_exit() == 0
    (b,) = o.bindings("--user", "ann")
    assert b["issuer"] == o.op.issuer and b["subject"] == "00u-ann" and b["state"] == "active"
    assert b["fingerprint"] == fingerprint(key)

    # the same key again: no sign-in, for every form
    out = o.run(key, "ann", "web", "--", "echo BOUND-$((40+2))")
    assert out.returncode == 0 and out.stdout == "BOUND-42\n", out.stderr
    with Terminal(o.ssh(key, "ann", tty=True), cols=120, rows=40) as t:
        t.wait_for(r"ann · roles: operators")
        assert "Sign in" not in t.screen_text()
        t.send("q")
        assert t.wait_exit() == 0
    logins = [(a, d) for a, oc, d in o.audit("login") if a == "ann" and oc == "ok"]
    assert [d["method"] for _, d in logins][:2] == ["device-flow+key", "bound-key"], logins
    assert logins[0][1]["subject"] == "00u-ann" and logins[0][1]["fingerprint"] == fingerprint(key)

    # revoked: the key needs a new sign-in
    out = o.env.bastion("keys", "revoke", "--user", "ann")
    assert out.returncode == 0, out.stderr
    assert o.bindings("--user", "ann") == []
    out = o.run(key, "ann", "web", "--", "echo SHOULD-NOT-RUN")
    assert out.returncode == 1 and "SHOULD-NOT-RUN" not in out.stdout
    assert "this key is not signed in" in out.stderr
    # nothing secret reached the logs
    text = o.env.log.read_text()
    assert SECRET not in text and code not in text


def test_exec_from_an_unbound_key_says_how_to_sign_in(oidc_env: OidcEnv) -> None:
    o = oidc_env
    key = o.new_key("stranger")
    out = o.run(key, "stranger", "web", "--", "id")
    assert out.returncode == 1 and out.stdout == ""
    assert "this key is not signed in" in out.stderr and "ssh " in out.stderr
    # a direct-tcpip forward from the unbound key is refused too
    argv = o.ssh(key, "stranger", tty=False)
    out = subprocess.run([*argv[:-1], "-W", f"127.0.0.1:{o.env.target.port}", argv[-1]], input="",
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 255 and "SSH-2.0" not in out.stdout, (out.stdout, out.stderr)
    assert fingerprint(key) not in [b["fingerprint"] for b in o.bindings("--all")]


def test_declined_sign_in_binds_nothing(oidc_env: OidcEnv) -> None:
    o = oidc_env
    key = o.new_key("declined")
    with Terminal(o.ssh(key, "ann", tty=True), cols=120, rows=50) as t:
        url, code = read_code(t)
        finish(browser(url, code, "ann", approve=False))
        t.wait_for(r"Sign-in failed: the sign-in was declined", timeout=20)
        t.send("q")
        assert t.wait_exit() == 1
    assert fingerprint(key) not in [b["fingerprint"] for b in o.bindings("--all")]
    assert any(oc == "access_denied" for _, oc, _ in o.audit("login.oidc"))


def test_groups_that_grant_no_role_are_refused(oidc_env: OidcEnv) -> None:
    o = oidc_env
    key = o.new_key("ben")
    with Terminal(o.ssh(key, "ben", tty=True), cols=120, rows=50) as t:
        url, code = read_code(t)
        finish(browser(url, code, "ben"))
        t.wait_for(r"Sign-in failed: your groups grant no role", timeout=20)
        t.send("q")
        assert t.wait_exit() == 1
    assert o.bindings("--all", "--user", "ben") == []
    assert fingerprint(key) not in [b["fingerprint"] for b in o.bindings("--all")]
    assert any(oc == "denied" and d.get("subject") == "00u-ben" for _, oc, d in o.audit("login.oidc"))
    out = o.run(key, "ben", "web", "--", "id")
    assert out.returncode == 1 and "not signed in" in out.stderr


def test_an_oidc_name_never_takes_a_local_users_account(oidc_env: OidcEnv) -> None:
    o = oidc_env
    key = o.new_key("impostor")
    with Terminal(o.ssh(key, "impostor", tty=True), cols=120, rows=50) as t:
        url, code = read_code(t)
        finish(browser(url, code, "impostor"))
        t.wait_for(r"alice-[0-9a-f]{6} · roles: operators", timeout=20)
        t.send("q")
        assert t.wait_exit() == 0
    (b,) = [b for b in o.bindings() if b["subject"] == "00u-imp"]
    assert re.fullmatch(r"alice-[0-9a-f]{6}", b["user"])
    # connecting as "alice" with that key is not alice: local names never become pending OIDC logins
    out = o.run(key, "alice", "web", "--", "id")
    assert out.returncode == 255 and "Permission denied" in out.stderr
    # nor does a keyboard-interactive device flow start for a local name
    out = subprocess.run([*kbdint_ssh(o, "alice", "-T"), "web", "--", "id"], input="\n",
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 255 and "Permission denied (publickey)" in out.stderr, out.stderr
    # and the real local alice (break-glass) still logs in with her configured key
    out = subprocess.run(ssh_argv(o.env.keys["alice"], o.env.port, "alice", "web", "--", "echo LOCAL-OK",
                                  tty=False), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == "LOCAL-OK\n", out.stderr


def kbdint_ssh(o: OidcEnv, user: str, *extra: str) -> list[str]:
    """``ssh`` without keys, offering only keyboard-interactive."""
    return ["ssh", "-F", "/dev/null", "-p", str(o.env.port), "-o", "PubkeyAuthentication=no",
            "-o", "PreferredAuthentications=keyboard-interactive", "-o", "IdentityAgent=none",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            *extra, f"{user}@127.0.0.1"]


def test_keyboard_interactive_sign_in_binds_no_key(oidc_env: OidcEnv) -> None:
    o = oidc_env
    argv = kbdint_ssh(o, "nokey", "-t")
    before = o.bindings("--all")
    with Terminal(argv, cols=200, rows=50) as t:
        t.wait_for(r"Sign in at \S+ with code \S+ .*Enter:")
        m = re.search(r"Sign in at (\S+) with code (\S+) ", t.screen_text())
        assert m, t.screen_text()
        finish(browser(m.group(1), m.group(2), "ann"))
        t.send("\r")
        t.wait_for(r"ann · roles: operators", timeout=20)
        t.send("q")
        assert t.wait_exit() == 0
    assert o.bindings("--all") == before  # no key was proven, so none is bound
    assert any(a == "ann" and d.get("method") == "keyboard-interactive" for a, oc, d in o.audit("login")
               if oc == "ok")


def test_code_expiry_ends_the_sign_in(tmp_path: Path) -> None:
    with start_provider(tmp_path / "op", clients=[{"client_id": "bastion", "client_secret": SECRET}],
                        accounts=ACCOUNTS, device_code_ttl=4) as op:
        env = make_env(tmp_path / "bastion", op)
        try:
            o = OidcEnv(env, op)
            key = o.new_key("slow")
            with Terminal(o.ssh(key, "ann", tty=True), cols=120, rows=50) as t:
                url, code = read_code(t)
                t.wait_for(r"Sign-in failed: the sign-in was not completed in time|the code expired", timeout=20)
                # the user arrives too late: the provider no longer knows the code
                with pytest.raises(AssertionError):
                    complete_device_flow(url, code, "ann", ACCOUNTS["ann"]["password"])
                t.send("q")
                assert t.wait_exit() == 1
            assert o.bindings("--all") == []
            assert any(oc == "failed" for _, oc, _ in o.audit("login.oidc"))
        finally:
            close_env(env)
