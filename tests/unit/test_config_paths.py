"""Where a config problem is reported: ``FILE:LINE: key.path`` as the admin wrote it, for every kind of resource.

pydantic puts the ``kind:`` tag of a resource into its error locations (``resources.k8s.kubernetes.server``); the
loader must drop it, whatever the kind, or the key is misnamed and reported at the resource's line instead of its
own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config import ConfigError, load_config
from bastion.config.resources import KIND_TAGS

HEAD = """\
host_keys: [host_key]
resources:
"""
# one resource of each kind, as the lines that follow HEAD (so the resource's name is on line 3)
RESOURCES = {
    "ssh": """\
  web1:
    kind: ssh
    host: 127.0.0.1
    user: deploy
    credential:
      private_key_file: cred
    host_key: "ssh-ed25519 AAAA"
""",
    "postgres": """\
  db:
    kind: postgres
    host: db.internal
    database: app
    user: app
    credential:
      password_file: pw
""",
    "kubernetes": """\
  k8s:
    kind: kubernetes
    server: https://127.0.0.1:6443
    namespace: default
    credential:
      token_file: token
""",
}


def problems(tmp_path: Path, text: str) -> tuple[Path, list[str]]:
    p = tmp_path / "bastion.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    return p, e.value.problems


def test_every_kind_has_a_sample_here() -> None:
    """A new kind of resource must be added to RESOURCES, so the tests below cover it too."""
    assert set(RESOURCES) == set(KIND_TAGS)


@pytest.mark.parametrize(("kind", "old", "new", "line", "key", "msg"), [
    ("kubernetes", "    server: https://127.0.0.1:6443", "    server: http://127.0.0.1:6443", 5,
     "resources.k8s.server", "String should match pattern"),
    ("kubernetes", "    namespace: default", "    namespace: Default_NS", 6, "resources.k8s.namespace",
     "String should match pattern"),
    ("kubernetes", "    namespace: default", "    namespace: default\n    colour: red", 7, "resources.k8s.colour",
     "unknown key"),
    ("kubernetes", "      token_file: token", "      token_file: token\n      colour: red", 9,
     "resources.k8s.credential.colour", "unknown key"),
    ("postgres", "    database: app", "    database: app\n    colour: red", 7, "resources.db.colour", "unknown key"),
    ("postgres", "    user: app", "    user: ''", 7, "resources.db.user", "String should have at least 1 character"),
    ("postgres", "      password_file: pw", "      password_file: pw\n      colour: red", 10,
     "resources.db.credential.colour", "unknown key"),
    ("ssh", "    user: deploy", "    user: deploy\n    colour: red", 7, "resources.web1.colour", "unknown key"),
    ("ssh", "    host: 127.0.0.1", "    host: 'bad host!'", 5, "resources.web1.host",
     "must be a host name or an IP address"),
    ("ssh", "      private_key_file: cred", "      private_key_file: cred\n      colour: red", 9,
     "resources.web1.credential.colour", "unknown key"),
])
def test_wrong_key_in_a_resource_names_its_own_line_and_path(tmp_path: Path, kind: str, old: str, new: str,
                                                             line: int, key: str, msg: str) -> None:
    text = HEAD + RESOURCES[kind]
    assert old in text
    p, found = problems(tmp_path, text.replace(old, new, 1))
    assert len(found) == 1, found
    assert found[0].startswith(f"{p}:{line}: {key}: "), found[0]
    assert msg in found[0]


@pytest.mark.parametrize("kind", sorted(RESOURCES))
def test_no_kind_tag_in_any_problem(tmp_path: Path, kind: str) -> None:
    """An unknown key after the last line of each kind of resource: reported there, without the tag."""
    body = RESOURCES[kind]
    name = body.split(":", 1)[0].strip()
    p, found = problems(tmp_path, HEAD + body + "    colour: red\n")
    line = 3 + body.count("\n")
    assert found == [f"{p}:{line}: resources.{name}.colour: unknown key"]


def test_names_that_look_like_kind_tags_are_kept(tmp_path: Path) -> None:
    """Only the tag's own position is dropped: a resource called ``postgres`` or a user called ``ssh`` keeps it."""
    text = (HEAD + RESOURCES["ssh"].replace("  web1:", "  postgres:") + "    colour: red\n"
            + "users:\n  ssh:\n    groups: [ops]\n    colour: red\n")
    p, found = problems(tmp_path, text)
    # pydantic reports in schema order: users before resources
    assert found == [f"{p}:14: users.ssh.colour: unknown key", f"{p}:10: resources.postgres.colour: unknown key"]


def test_unknown_and_missing_kind(tmp_path: Path) -> None:
    p, found = problems(tmp_path, HEAD + RESOURCES["ssh"].replace("kind: ssh", "kind: telnet"))
    assert found == [f"{p}:4: resources.web1.kind: unknown kind 'telnet' (known kinds: ssh, postgres, kubernetes)"]
    p, found = problems(tmp_path, HEAD + RESOURCES["postgres"].replace("    kind: postgres\n", ""))
    assert found == [f"{p}:3: resources.db: missing 'kind' (known kinds: ssh, postgres, kubernetes)"]
