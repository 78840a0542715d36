"""Config loading: valid files load; every error names the file, the line and the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import asyncssh
import pytest

from bastion.config import ConfigError, load_config


@pytest.fixture()
def keys(tmp_path: Path) -> dict[str, str]:
    cred = asyncssh.generate_private_key("ssh-ed25519")
    (tmp_path / "cred").write_bytes(cred.export_private_key())
    host = asyncssh.generate_private_key("ssh-ed25519")
    user = asyncssh.generate_private_key("ssh-ed25519")
    return {"host": " ".join(host.export_public_key().decode().split()[:2]),
            "user": user.export_public_key().decode().strip()}


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "bastion.yaml"
    p.write_text(text)
    return p


def good(keys: dict[str, str]) -> str:
    return f"""\
listen:
  host: 127.0.0.1
  port: 2222
host_keys: [host_key]
database: sqlite:///bastion.db
recordings_dir: rec
users:
  alice:
    groups: [ops]
    authorized_keys:
      - "{keys['user']}"
resources:
  web1:
    kind: ssh
    description: web server
    host: 127.0.0.1
    port: 22
    user: deploy
    credential:
      private_key_file: cred
    host_key: "{keys['host']}"
roles:
  operators:
    groups: [ops]
    resources: ["web*"]
"""


def test_valid_config_loads_with_paths_resolved(tmp_path: Path, keys: dict[str, str]) -> None:
    cfg = load_config(write(tmp_path, good(keys)))
    assert cfg.listen.port == 2222
    assert cfg.host_keys == [tmp_path / "host_key"]
    assert cfg.recordings_dir == tmp_path / "rec"
    assert cfg.database_url == f"sqlite:///{tmp_path / 'bastion.db'}"
    assert cfg.resources["web1"].user == "deploy"
    assert cfg.user_keys["alice"] == [keys["user"]]


@pytest.mark.parametrize(("old", "new", "line", "key", "msg"), [
    ("  port: 2222", "  port: 99999", 3, "listen.port", "less than or equal to 65535"),
    ("    port: 22\n", "    port: 22\n    colour: red\n", 18, "resources.web1.colour", "unknown key"),
    ("    kind: ssh", "    kind: telnet", 14, "resources.web1.kind", "unknown kind 'telnet'"),
    ("    user: deploy\n", "", 13, "resources.web1.user", "required key is missing"),
    ("    resources: [\"web*\"]", "    resources: [\"db*\"]", 25, "roles.operators.resources[0]",
     "'db*' matches no resource"),
    ("    host_key: \"", "    host_key: \"ssh-ed25519 AAAAnotakey", 21, "resources.web1.host_key",
     "not a valid public host key"),
    ("      private_key_file: cred", "      private_key_file: missing", 20,
     "resources.web1.credential.private_key_file", "cannot load private key"),
    ("      - \"ssh-", "      - \"ssh-bogus ", 11, "users.alice.authorized_keys[0]", "not a valid public key"),
    # `ssh bastion review` is a command: a resource cannot have that name (nor approve, deny, observe, help)
    ("  web1:\n", "  review:\n", 13, "resources.review", "'review' is reserved"),
    ("  web1:\n", "  Approve:\n", 13, "resources.Approve", "'Approve' is reserved"),
    # moderators must be roles that exist and may observe the resource's sessions
    ("    port: 22\n", "    port: 22\n    moderators: {roles: [nobody]}\n", 18, "resources.web1.moderators.roles[0]",
     "no role 'nobody' is defined"),
    ("    port: 22\n", "    port: 22\n    moderators: {roles: [operators]}\n", 18,
     "resources.web1.moderators.roles[0]", "can neither review web1 nor audit"),
    ("    port: 22\n", "    port: 22\n    moderators: {roles: []}\n", 18, "resources.web1.moderators.roles",
     "at least 1 item"),
    ("    port: 22\n", "    port: 22\n    forwarding: [5432]\n    moderators: {roles: [operators]}\n", 18,
     "resources.web1.forwarding", "a moderated resource cannot forward ports"),
])
def test_errors_name_file_line_and_key(tmp_path: Path, keys: dict[str, str], old: str, new: str, line: int,
                                       key: str, msg: str) -> None:
    text = good(keys)
    assert old in text
    p = write(tmp_path, text.replace(old, new, 1))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    first = e.value.problems[0]
    assert first.startswith(f"{p}:{line}: {key}: "), first
    assert msg in first


def test_duplicate_key_and_yaml_syntax(tmp_path: Path, keys: dict[str, str]) -> None:
    p = write(tmp_path, good(keys).replace("recordings_dir: rec\n", "recordings_dir: rec\ndatabase: x\n"))
    with pytest.raises(ConfigError, match=rf"^{p}:7: database: duplicate key"):
        load_config(p)
    p = write(tmp_path, "listen:\n  port: [1,\n")
    with pytest.raises(ConfigError, match=rf"^{p}:3: invalid YAML"):
        load_config(p)


def test_several_problems_reported_at_once(tmp_path: Path, keys: dict[str, str]) -> None:
    text = good(keys).replace("  port: 2222", "  port: zero").replace("    port: 22\n", "    port: -1\n")
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert len(e.value.problems) == 2
    assert any(":3: listen.port:" in p for p in e.value.problems)
    assert any(":17: resources.web1.port:" in p for p in e.value.problems)


def test_check_config_cli(tmp_path: Path, keys: dict[str, str]) -> None:
    p = write(tmp_path, good(keys))
    ok = subprocess.run([sys.executable, "-m", "bastion.cli", "check-config", str(p)], capture_output=True,
                        text=True)
    assert ok.returncode == 0 and "OK (1 resources, 1 local users, 1 roles)" in ok.stdout
    write(tmp_path, good(keys).replace("  host: 127.0.0.1\n  port: 2222", "  host: 127.0.0.1\n  prot: 2222"))
    bad = subprocess.run([sys.executable, "-m", "bastion.cli", "check-config", str(p)], capture_output=True,
                         text=True)
    assert bad.returncode == 1
    assert f"{p}:3: listen.prot: unknown key" in bad.stderr


KUBE = """\
  k8s:
    kind: kubernetes
    server: https://127.0.0.1:6443
    credential: {token_file: token}
    policy: k
"""


def kube_config(keys: dict[str, str], resource: str = KUBE, rules: str = "") -> str:
    text = good(keys).replace("roles:\n", resource + "roles:\n", 1)
    return text + "policies:\n  k:\n    default: allow\n    rules:\n" + (rules or "      - {name: r, verbs: [get], "
                                                                        "action: block}\n")


def test_kubernetes_resource_loads(tmp_path: Path, keys: dict[str, str]) -> None:
    (tmp_path / "token").write_text("t0k\n")
    cfg = load_config(write(tmp_path, kube_config(keys) + "kubectl: /bin/true\n"))
    res = cfg.resources["k8s"]
    assert res.kind == "kubernetes" and res.namespace == "default" and not res.port_forward
    assert cfg.kubectl == "/bin/true"
    assert cfg.policies["k"].rules[0].verbs == ("get",)


@pytest.mark.parametrize(("resource", "rules", "needle"), [
    (KUBE.replace("credential: {token_file: token}", "credential: {client_cert_file: c}"), "",
     "client_cert_file and client_key_file go together"),
    (KUBE.replace("credential: {token_file: token}", "credential: {}"), "", "give token_file"),
    (KUBE.replace("https://127.0.0.1:6443", "http://127.0.0.1:6443"), "", "server"),
    (KUBE.replace("token_file: token", "token_file: missing"), "", "cannot read"),
    (KUBE, "      - {name: mixed, verbs: [delete], programs: [rm], action: block}\n", "mixes shell"),
    (KUBE, "      - {name: bad-verb, verbs: [destroy], action: block}\n", "verbs"),
])
def test_kubernetes_config_errors(tmp_path: Path, keys: dict[str, str], resource: str, rules: str,
                                  needle: str) -> None:
    (tmp_path / "token").write_text("t0k\n")
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, kube_config(keys, resource, rules) + "kubectl: /bin/true\n"))
    assert needle in str(e.value) and "bastion.yaml:" in str(e.value)


def test_kubernetes_error_names_the_key_and_its_line(tmp_path: Path, keys: dict[str, str]) -> None:
    # not resources.k8s.kubernetes.server at the resource's line (pydantic's location keeps the kind tag)
    (tmp_path / "token").write_text("t0k\n")
    p = write(tmp_path, kube_config(keys, KUBE.replace("https://127.0.0.1:6443", "http://127.0.0.1:6443"))
              + "kubectl: /bin/true\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.problems[0].startswith(f"{p}:24: resources.k8s.server: String should match pattern"), \
        e.value.problems


def test_kubernetes_needs_kubectl(tmp_path: Path, keys: dict[str, str]) -> None:
    (tmp_path / "token").write_text("t0k\n")
    with pytest.raises(ConfigError, match="need kubectl"):
        load_config(write(tmp_path, kube_config(keys) + "kubectl: /nonexistent/kubectl\n"))


def test_recordings_in_a_bucket(tmp_path: Path, keys: dict[str, str]) -> None:
    base = good(keys)
    (tmp_path / "s3-secret").write_text("s3cr3t\n")
    ok = base + ("recordings:\n  s3:\n    bucket: bastion-recs\n    prefix: prod/\n    access_key_id: AKIAEXAMPLE\n"
                 "    secret_access_key_file: s3-secret\n    cache_max_mb: 10\n")
    cfg = load_config(write(tmp_path, ok))
    storage = cfg.recording_storage()
    assert storage.remote and storage.s3 is not None
    assert (storage.s3.bucket, storage.s3.prefix, storage.s3.secret_access_key) == ("bastion-recs", "prod/", "s3cr3t")
    assert storage.s3.cache_max_bytes == 10 << 20 and storage.root == tmp_path / "rec"
    assert "s3cr3t" not in repr(cfg)  # the secret is read when the storage is made, never kept in the config
    for bad, key, msg in (
            ("    bucket: Bastion_Recs\n", "recordings.s3.bucket", "should match pattern"),
            ("    prefix: /abs\n", "recordings.s3.prefix", "should match pattern"),
            ("    secret_access_key_file: nowhere\n", "recordings.s3.secret_access_key_file", "cannot read")):
        field = bad.split(":")[0]
        text = "\n".join(bad.rstrip("\n") if line.startswith(field + ":") else line for line in ok.split("\n"))
        p = write(tmp_path, text)
        with pytest.raises(ConfigError) as e:
            load_config(p)
        assert any(f": {key}: " in prob and msg in prob and prob.startswith(f"{p}:") for prob in e.value.problems), \
            e.value.problems
    half = ok.replace("    access_key_id: AKIAEXAMPLE\n", "")
    with pytest.raises(ConfigError, match="access_key_id and secret_access_key_file together"):
        load_config(write(tmp_path, half))


def test_access_on_request_needs_someone_to_grant_it(tmp_path: Path, keys: dict[str, str]) -> None:
    asking = good(keys) + "  oncall:\n    groups: [ops]\n    request: [\"web*\"]\n    request_ttl: 1800\n"
    p = write(tmp_path, asking)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert any(prob.startswith(f"{p}:28: roles.oncall.request[0]: ") and "nobody could grant it" in prob
               for prob in e.value.problems), e.value.problems
    cfg = load_config(write(tmp_path, asking + "  reviewers:\n    groups: [leads]\n    review: [\"web*\"]\n"))
    assert cfg.roles["oncall"].request == ["web*"] and cfg.roles["oncall"].request_ttl == 1800
    with pytest.raises(ConfigError, match="roles.oncall.request_ttl"):
        load_config(write(tmp_path, asking.replace("request_ttl: 1800", "request_ttl: 5")))
