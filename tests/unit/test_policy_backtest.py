"""``bastion policy backtest``: markers read back into what the engine was asked, the diff and its table, and a
whole run over a store and recordings written the way the live path writes them (bastion/sessions/hooks.py)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import asyncssh
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.audit.backtest import Backtest, Change, judge, run
from bastion.audit.backtest_markers import Judged, guard_exec, kube_request, parse_summary, split_exec, split_reason
from bastion.cli.backtest import as_json, at, by_rule
from bastion.config import Config, load_config
from bastion.store.db import Store
from policies.engine import Action, Decision, evaluate
from policies.execs import Exec
from policies.kube import KubeRequest, parse_request
from recorder.asciicast import CastWriter

PERMISSIVE = """\
  sh: {default: allow, rules: [{name: ok-echo, programs: [echo], action: allow, reason: "echo: harmless"}]}
  sql: {default: allow}
  k8s: {default: allow}
"""
STRICT = """\
  sh:
    default: allow
    rules:
      - {name: no-rm, programs: [rm], action: block, reason: "deleting files: not here"}
      - {name: chmod-held, programs: [chmod], action: require_approval, groups: [ops]}
  sql:
    default: allow
    rules: [{name: no-delete, statements: [delete], action: block}]
  k8s:
    default: allow
    rules: [{name: delete-held, verbs: [delete], action: require_approval}]
"""


def config_text(tmp: Path, policies: str) -> str:
    host = asyncssh.generate_private_key("ssh-ed25519")
    hk = " ".join(host.export_public_key().decode().split()[:2])
    return f"""\
listen: {{host: 127.0.0.1, port: 2222}}
host_keys: [host_key]
database: sqlite:///{tmp}/bastion.db
recordings_dir: {tmp}/rec
users:
  alice: {{groups: [ops], authorized_keys: []}}
  bob: {{groups: [dev], authorized_keys: []}}
resources:
  web: {{kind: ssh, host: 127.0.0.1, user: deploy, credential: {{private_key_file: cred}}, host_key: "{hk}",
         policy: sh}}
  gweb: {{kind: ssh, host: 127.0.0.1, user: deploy, credential: {{private_key_file: cred}}, host_key: "{hk}",
          policy: sh, enforce: guard}}
  db: {{kind: postgres, host: 127.0.0.1, database: app, user: app, credential: {{password_file: pw}}, policy: sql}}
  k8s: {{kind: kubernetes, server: "https://127.0.0.1:6443", credential: {{token_file: tok}}, policy: k8s}}
roles:
  operators: {{groups: [ops, dev], resources: ["*"]}}
policies:
{policies}"""


@pytest.fixture()
def configs(tmp_path: Path) -> tuple[Config, Config, Path, Path]:
    for name in ("cred", "pw", "tok"):
        (tmp_path / name).write_text("x\n")
    paths = []
    for name, pol in (("permissive", PERMISSIVE), ("strict", STRICT)):
        p = tmp_path / f"{name}.yaml"
        p.write_text(config_text(tmp_path, pol))
        paths.append(p)
    return load_config(paths[0], check_files=False), load_config(paths[1], check_files=False), paths[0], paths[1]


def j(kind: str, text: str, resource: str = "web", user: str = "alice", groups: tuple[str, ...] = ("ops",),
      subject: object = None) -> Judged:
    return Judged("S", 1.0, user, resource, kind, text, "allow", None, subject=subject,  # type: ignore[arg-type]
                  groups=groups)


# -- markers read back ----------------------------------------------------------------------------------------

def test_summary_names_the_rule_or_the_default() -> None:
    s = parse_summary("block by rule 'no-rm': deleting files: not here: rm -f x")
    assert s is not None and (s.action, s.rule, s.rest) == ("block", "no-rm", "deleting files: not here: rm -f x")
    s = parse_summary("""allow by rule "it's": fine: ls""")
    assert s is not None and s.rule == "it's"
    s = parse_summary("require_approval by the default of the policy: ls: no rule matched; default is "
                      "require_approval: ls")
    assert s is not None and s.rule is None and s.action == "require_approval"
    assert parse_summary("approval #3: approved (by bob)") is None
    assert parse_summary("observed by carol") is None


def test_reason_and_text_are_told_apart_or_refused() -> None:
    never = frozenset[str]()
    assert split_reason("why: rm -f x", never, lambda r, t: False) == "rm -f x"
    assert split_reason("deleting files: not here: rm -f x", frozenset({"deleting files: not here"}),
                        lambda r, t: False) == "rm -f x"
    assert split_reason("a: b: c", never, lambda r, t: t == "c") == "c"
    assert split_reason("a: b: c", never, lambda r, t: True) is None  # two readings reproduce: refused
    assert split_reason("a: b: c", never, lambda r, t: False) is None
    assert split_reason("no separator", never, lambda r, t: True) is None
    # the engine's own words for a decision no rule took, whatever config took it
    assert split_reason("rm: no rule matched; default is allow: rm a: b", never, lambda r, t: False) == "rm a: b"
    assert split_reason("rm matches rule 'x': rm a: b", never, lambda r, t: False, "x") == "rm a: b"


@pytest.mark.parametrize(("method", "target"), [
    ("GET", "/api/v1/namespaces/default/pods"), ("DELETE", "/api/v1/namespaces/prod/pods/web-1"),
    ("GET", "/apis/apps/v1/namespaces/default/deployments/web/scale"), ("DELETE", "/api/v1/namespaces/x/pods"),
    ("POST", "/api/v1/namespaces/default/pods/web-1/exec?command=rm&command=-f&command=x&stdout=true"),
    ("GET", "/api/v1/secrets?watch=1"), ("GET", "/healthz"), ("PATCH", "/apis/apps/v1/namespaces/a/deployments/b"),
])
def test_a_kube_description_reads_back_into_the_same_decision(configs: tuple, method: str, target: str) -> None:
    _, strict, _, _ = configs
    req = parse_request(method, target)
    back = kube_request(req.describe())
    live = judge(strict, j("kube", req.describe(), "k8s", subject=req))
    again = judge(strict, j("kube", req.describe(), "k8s", subject=back if isinstance(back, KubeRequest) else None))
    assert (again.action, again.rule, again.reason, again.text) == (live.action, live.rule, live.reason, live.text)


def test_an_unjudgeable_kube_request_is_refused_again(configs: tuple) -> None:
    _, strict, _, _ = configs
    assert kube_request("GET /api/v1/%2e%2e") == "GET /api/v1/%2e%2e"
    d = judge(strict, j("kube", "GET /api/v1/%2e%2e", "k8s"))
    assert d.action == Action.BLOCK and "cannot be judged" in d.reason
    assert isinstance(kube_request("frobnicate the cluster"), str)


_word = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(exe=st.sampled_from(["/usr/bin/rm", "/tmp/my prog", "/usr/bin/x'y"]), argv=st.lists(_word, max_size=6),
       chain=st.lists(_word.filter(lambda w: " \u2190 " not in w), max_size=3),
       copy=st.sampled_from([None, "/usr/bin/rm", "/bin/a b"]))
def test_an_exec_description_reads_back_into_the_same_exec(exe: str, argv: list[str], chain: list[str],
                                                            copy: str | None) -> None:
    ev = Exec(exe=exe, argv=tuple(argv), chain=tuple(chain), copy_of=copy, trusted=True)
    back, _ = guard_exec(ev.describe(), None, False)
    assert (back.exe, back.argv, back.chain, back.copy_of) == (ev.exe, ev.argv, ev.chain, ev.copy_of)


def test_an_exec_marker_splits_into_description_and_decision() -> None:
    text, s = split_exec("/usr/bin/echo echo a: b [by bash]")
    assert text == "/usr/bin/echo echo a: b [by bash]" and s.action == "allow"
    text, s = split_exec("/usr/bin/rm rm -f x [by bash]: block by rule 'no-rm': deleting files: not here")
    assert text == "/usr/bin/rm rm -f x [by bash]" and (s.action, s.rule) == ("block", "no-rm")
    with pytest.raises(ValueError, match="cut"):
        guard_exec("/usr/bin/echo echo aaaa [... 12 more characters]", None, False)


# -- the diff and its table -----------------------------------------------------------------------------------

def test_changes_are_counted_per_rule_and_offsets_read_by_replay() -> None:
    from bastion.cli.common import parse_offset

    def change(old: str, new: Action, rule: str | None, t: float) -> Change:
        return Change(Judged("S1", t, "alice", "web", "shell", "rm x", old, None), Decision(new, rule, "r", "rm x"))

    res = Backtest(changes=[change("allow", Action.BLOCK, "no-rm", 3.7), change("allow", Action.BLOCK, "no-rm", 65),
                            change("allow", Action.REQUIRE_APPROVAL, "held", 3725.2)], judged=5, seconds=0.001)
    assert by_rule(res.changes) == [(("allow", "block", "(default)", "no-rm"), 2),
                                    (("allow", "require_approval", "(default)", "held"), 1)]
    assert [at(c.was.t) for c in res.changes] == ["0:03", "1:05", "1:02:05"]
    assert [parse_offset(at(c.was.t)) for c in res.changes] == [3, 65, 3725]
    doc = as_json(res, "new.yaml", None)
    assert doc["changes"][0]["replay"] == "bastion replay S1 --from 0:03" and doc["per_second"] == 5000
    assert json.loads(json.dumps(doc)) == doc


# -- a whole run: store, casts and audit events as the live path leaves them ------------------------------------

class Recorder:
    """Sessions recorded the way the daemon records them: a session row, a cast with the live path's markers,
    decisions taken by the live path's engine calls under ``cfg``."""

    def __init__(self, cfg: Config, store: Store, tmp: Path) -> None:
        self.cfg, self.store, self.tmp, self.n = cfg, store, tmp, 0

    def session(self, user: str, resource: str, markers: list[tuple[float, str]], command: str | None = None,
                term: str = "xterm") -> str:
        self.n += 1
        sid = f"S{self.n}"
        path = self.tmp / "rec" / f"{sid}.cast"
        self.store.start_session(sid, user=user, resource=resource, kind=self.cfg.resources[resource].kind,
                                 mode="exec" if command else "interactive", command=command, client_addr="",
                                 node="n", recording_path=path)
        clock = iter([0.0] + [t for t, _ in markers] + [99.0] * 3)
        w = CastWriter(path, 80, 24, title="t", env={"TERM": term}, clock=lambda: next(clock))
        for _, label in markers:
            w.marker(label)
        sha = w.close()
        self.store.end_session(sid, outcome="exited", exit_status=0, message="", sha256=sha, size=path.stat().st_size)
        return sid

    def judge(self, kind: str, text: str, resource: str, user: str = "alice", subject: object = None) -> Decision:
        groups = tuple(self.cfg.users[user].groups)
        return judge(self.cfg, j(kind, text, resource, user, groups, subject))

    def record_all(self) -> dict[str, str]:
        """One session of each kind; each holds one harmless decision and one that the strict config refuses."""
        sh = [self.judge("shell", t, "web") for t in ("echo a: b", "rm -f /tmp/x")]
        ex = self.judge("exec-form", "rm -rf /tmp/y", "web")
        sql = [self.judge("sql", t, "db") for t in ("SELECT 1", "DELETE FROM t WHERE id = 1")]
        reqs = [parse_request("GET", "/api/v1/namespaces/default/pods"),
                parse_request("DELETE", "/api/v1/namespaces/default/pods/web-1")]
        kube = [self.judge("kube", r.describe(), "k8s", subject=r) for r in reqs]
        evs = [Exec("/usr/bin/bash", ("bash",), trusted=True, first=True),
               Exec("/usr/bin/rm", ("rm", "-f", "x"), chain=("bash", "sshd"), trusted=True)]
        execs = [self.judge("exec", e.describe(), "gweb", subject=e) for e in evs]
        return {
            "shell": self.session("alice", "web", [(1.5, f"policy: {d.summary()}: {d.text}") for d in sh]),
            "exec-form": self.session("alice", "web", [(0.1, "session x: alice opened web: rm -rf /tmp/y"),
                                                       (0.2, f"policy: {ex.summary()}")], command="rm -rf /tmp/y",
                                      term="dumb"),
            "sql": self.session("bob", "db", [(t, f"sql: {d.summary()}: {d.text}") for t, d in zip((2, 70), sql,
                                                                                                  strict=True)]),
            "kube": self.session("alice", "k8s", [(3.0, f"kube: {d.summary()}: {d.text}") for d in kube]),
            "exec": self.session("alice", "gweb", [(4.0, "exec: " + d.text + ("" if d.action == Action.ALLOW else
                                                                              f": {d.summary()}")) for d in execs]),
        }


def test_stricter_config_names_exactly_what_would_now_be_refused(configs: tuple, tmp_path: Path) -> None:
    permissive, strict, _, _ = configs
    store = Store(permissive.database_url)
    store.migrate()
    sids = Recorder(permissive, store, tmp_path).record_all()
    res = run(store, permissive, strict, since=None)
    got = sorted((c.was.session, c.was.t, c.was.kind, c.was.text, c.was.action, c.now.action.label, c.now.rule)
                 for c in res.changes)
    assert got == sorted([
        (sids["shell"], 1.5, "shell", "rm -f /tmp/x", "allow", "block", "no-rm"),
        (sids["exec-form"], 0.2, "exec-form", "rm -rf /tmp/y", "allow", "block", "no-rm"),
        (sids["sql"], 70.0, "sql", "DELETE FROM t WHERE id = 1", "allow", "block", "no-delete"),
        (sids["kube"], 3.0, "kube", "delete pods web-1 -n default", "allow", "require_approval", "delete-held"),
        (sids["exec"], 4.0, "exec", "/usr/bin/rm rm -f x [by bash \u2190 sshd]", "allow", "block", "no-rm"),
    ])
    assert res.judged == 9 and res.unjudged == []
    assert res.groups == {"alice": "the running config", "bob": "the running config"}


def test_looser_config_shows_what_would_now_be_allowed(configs: tuple, tmp_path: Path) -> None:
    permissive, strict, _, _ = configs
    store = Store(strict.database_url)
    store.migrate()
    rec = Recorder(strict, store, tmp_path)
    sids = rec.record_all()
    # refused before any session opened: only the store knows (bastion/sessions/broker.py)
    store.audit("bob", "command.blocked", "blocked", resource="web", rule="no-rm", text="rm -f /etc/x", mode="exec")
    res = run(store, strict, permissive, since=None)
    got = sorted((c.was.session or "-", c.was.kind, c.was.action, c.was.rule or "", c.now.action.label)
                 for c in res.changes)
    assert got == sorted([
        (sids["shell"], "shell", "block", "no-rm", "allow"),
        (sids["exec-form"], "exec-form", "block", "no-rm", "allow"),
        (sids["sql"], "sql", "block", "no-delete", "allow"),
        (sids["kube"], "kube", "require_approval", "delete-held", "allow"),
        (sids["exec"], "exec", "block", "no-rm", "allow"), ("-", "exec-form", "block", "no-rm", "allow"),
    ])


def test_who_the_user_was_decides(configs: tuple, tmp_path: Path) -> None:
    """chmod is held for ops only: alice's chmod would change, bob's (dev) would not."""
    permissive, strict, _, _ = configs
    store = Store(permissive.database_url)
    store.migrate()
    rec = Recorder(permissive, store, tmp_path)
    d = rec.judge("shell", "chmod 600 f", "web")
    for user in ("alice", "bob"):
        rec.session(user, "web", [(1.0, f"policy: {d.summary()}: chmod 600 f")])
    res = run(store, permissive, strict, since=None)
    assert [(c.was.user, c.now.action) for c in res.changes] == [("alice", Action.REQUIRE_APPROVAL)]


def test_what_cannot_be_judged_again_is_reported(configs: tuple, tmp_path: Path) -> None:
    permissive, strict, _, _ = configs
    store = Store(permissive.database_url)
    store.migrate()
    rec = Recorder(permissive, store, tmp_path)
    sid = rec.session("alice", "web", [
        (1.0, "policy: allow by the default of the policy: a: b: c: d"),  # two readings, none reproduces
        (2.0, "policy: allow by the default of the policy: a secret: (typed without echo at a secret prompt: not "
              "recorded)"),
        (3.0, "exec: /usr/bin/cat cat [... 5 more characters]"),
        (4.0, "observed by carol"),
    ])
    rec.session("alice", "db", [(1.0, "sql: block by rule 'masking-copy': COPY out of masked data: COPY t TO STDOUT")])
    store.start_session("S-gone", user="alice", resource="web", kind="ssh", mode="interactive", command=None,
                        client_addr="", node="n", recording_path=tmp_path / "rec" / "missing.cast")
    res = run(store, permissive, strict, since=None)
    whys = sorted((u.session, u.t, (u.problem or "")[:30]) for u in res.unjudged)
    assert whys == sorted([
        (sid, 1.0, "the marker's reason and judged"), (sid, 2.0, "the answer to a secret prompt:"),
        (sid, 3.0, "the exec marker cannot be read"), ("S2", 1.0, "a masking refusal (rule 'maski"),
        ("S-gone", None, "the recording cannot be fetche"),
    ])
    assert res.changes == [] and res.judged == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.sampled_from(["rm", "ls", "echo", "a:", "b", "'x: y'", "-f", ";", "chmod"]), min_size=1,
                      max_size=6))
def test_a_typed_line_reads_back_as_typed(configs: tuple, words: list[str]) -> None:
    """Whatever ``: `` the reason and the line hold, the line judged again is the line that was judged."""
    from bastion.audit.backtest import _Reader, _reproduces
    from bastion.store.rows import SessionRecord

    permissive, _, _, _ = configs
    text = " ".join(words)
    d = evaluate(permissive.policies["sh"], text, groups=["ops"], resource="web", interactive=True)
    sess = SessionRecord("S", "alice", "web", "ssh", "interactive", None, "", "n", None, None, "exited", 0, "",  # type: ignore[arg-type]
                         None, None)
    reasons = frozenset(r.reason for p in permissive.policies.values() for r in p.rules if r.reason)
    reader = _Reader(sess, "ssh", reasons, lambda jj, s: _reproduces(permissive, jj, s), ("ops",))
    got = reader.read(1.0, f"policy: {d.summary()}: {d.text}")
    assert got is not None and got.problem is None and got.text == text, shlex.join(words)
