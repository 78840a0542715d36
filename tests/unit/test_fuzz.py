"""Property-based fuzzing (hypothesis) of what reads untrusted or hand-written input: the config loader, the cast
reader and seek index, the screen-line reconstructor, and the Kubernetes request parser. Each either answers or
fails with its own clear error; nothing else escapes, and what it answers is sane."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.config import ConfigError, load_config
from policies.kube import KubeParseError, parse_request
from recorder.asciicast import CastError, read_cast
from recorder.seekindex import build
from recorder.textindex import ScreenLines

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")),  # FUZZ_EXAMPLES=5000 to dig deeper
                deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

BASE_CONFIG = {
    "listen": {"host": "127.0.0.1", "port": 2222},
    "host_keys": ["host_ed25519"],
    "users": {"alice": {"groups": ["ops"], "authorized_keys": []}},
    "resources": {"web": {"kind": "ssh", "host": "127.0.0.1", "port": 22, "user": "u",
                          "credential": {"private_key_file": "k"}, "host_key": "ssh-ed25519 AAAA", "policy": "p"}},
    "roles": {"ops": {"groups": ["ops"], "resources": ["web"]}},
    "policies": {"p": {"default": "allow", "rules": [{"name": "r", "programs": ["rm"], "action": "block"}]}},
}
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.floats(allow_nan=True),
                    st.text(max_size=12), st.lists(st.text(max_size=5), max_size=3))
paths = st.lists(st.sampled_from(["listen", "port", "host", "users", "alice", "groups", "resources", "web", "kind",
                                  "policy", "roles", "ops", "policies", "p", "rules", "default", "action",
                                  "credential", "limits", "sandbox", "oidc", "recordings", "audit", "x"]),
                 min_size=1, max_size=4)


def _mutate(cfg: dict, path: list[str], value: object) -> dict:
    node = cfg
    for key in path[:-1]:
        nxt = node.get(key) if isinstance(node, dict) else None
        if not isinstance(nxt, dict):
            nxt = {}
            node[key] = nxt
        node = nxt
    node[path[-1]] = value
    return cfg


@FUZZ
@given(mutations=st.lists(st.tuples(paths, scalars), max_size=4))
def test_config_loader_answers_or_names_file_and_line(tmp_path: Path, mutations: list) -> None:
    cfg = json.loads(json.dumps(BASE_CONFIG))
    for path, value in mutations:
        cfg = _mutate(cfg, path, value)
    f = tmp_path / "bastion.yaml"
    f.write_text(yaml.safe_dump(cfg))
    try:
        load_config(f, check_files=False)
    except ConfigError as e:
        assert e.problems and all(re.match(rf"{re.escape(str(f))}:\d+: ", p) for p in e.problems), e.problems


@FUZZ
@given(text=st.text(max_size=300))
def test_config_loader_on_arbitrary_text(tmp_path: Path, text: str) -> None:
    f = tmp_path / "bastion.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:  # nothing arbitrary is a complete config (host_keys is required)
        load_config(f, check_files=False)
    assert all(p.startswith(f"{f}:") for p in e.value.problems)


def test_control_character_in_config_names_its_line(tmp_path: Path) -> None:
    f = tmp_path / "bastion.yaml"
    f.write_text("listen: {port: 2222}\nhost_keys: [k]\nusers: {a\x01: {}}\n")
    with pytest.raises(ConfigError) as e:
        load_config(f, check_files=False)
    assert e.value.problems == [f"{f}:3: invalid YAML: character 0x01 is not allowed"]


lines = st.one_of(
    st.builds(lambda t, c, d: json.dumps([t, c, d]), st.floats(0, 1e4) | st.integers(-3, 10) | st.text(max_size=3),
              st.sampled_from(["o", "i", "m", "r", "", "x"]), st.text(max_size=40) | st.integers()),
    st.text(max_size=40), st.just(""), st.just("[1.0, \"o\""))


@FUZZ
@given(body=st.lists(lines, max_size=30), width=st.integers(-2, 300))
def test_cast_reader_and_seek_index_never_crash(tmp_path: Path, body: list[str], width: int) -> None:
    p = tmp_path / "f.cast"
    header = json.dumps({"version": 2, "width": width, "height": 5})
    p.write_text("\n".join([header, *body]) + "\n")
    try:
        cast = read_cast(p)
    except CastError as e:
        assert str(p) in str(e)
        return
    assert all(ev.time >= 0 and isinstance(ev.data, str) for ev in cast.events)
    idx = build(p, every_bytes=16)  # resize events with junk sizes, markers, output of any kind
    assert idx.duration == max((ev.time for ev in cast.events), default=0.0)
    assert [m for m in idx.markers] == [(ev.time, ev.data) for ev in cast.events if ev.code == "m"]


@FUZZ
@given(chunks=st.lists(st.text(alphabet=st.sampled_from(list("ab \r\n\b\t\x1b[]0123;KCDHJmP?@X\x07\\~")) |
                               st.characters(), max_size=30), max_size=30))
def test_screen_lines_never_crash_and_leave_no_escapes(chunks: list[str]) -> None:
    sl = ScreenLines()
    out = []
    for i, c in enumerate(chunks):
        out += sl.feed(float(i), c)
    out += sl.flush()
    for t, line in out:
        assert 0 <= t < len(chunks) + 1 and line.strip() and "\n" not in line and "\r" not in line
        assert "\x1b" not in line and len(line) <= 4000


@FUZZ
@given(method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "get", ""]),
       target=st.text(alphabet=st.sampled_from(list("/apiv1namespacesdefaultpods%2e.?=&#:@;\\x ")), max_size=60))
def test_kube_request_parser_answers_or_refuses(method: str, target: str) -> None:
    try:
        req = parse_request(method, target)
    except KubeParseError:
        return
    # what it accepts it describes without smuggling: no dot-segments or encodings survive into the fields
    for field in (req.namespace, req.resource, req.subresource, req.name):
        assert field is None or (".." not in field and "%" not in field and "/" not in field)
