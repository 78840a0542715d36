"""A refusal that no rule made (the command cannot be parsed, a guardrail, a transfer that cannot be judged, the
policy's default) reads ``refused: why`` wherever the operator sees it: never ``blocked by rule None``."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import h11
import pytest

from bastion.proxies.kube.proxy import KubeProxy
from bastion.sessions.broker import Broker
from policies.engine import Action, Decision, PolicySet, Rule, evaluate, evaluate_kube, evaluate_sql
from policies.kube import parse_request
from policies.transfer import Transfer, evaluate_transfer

POLICY = PolicySet("p", Action.ALLOW, (
    Rule("no-rm", Action.BLOCK, programs=("rm",), reason="no deleting"),
    Rule("watch-uname", Action.WARN, programs=("uname",), reason="uname is watched"),
))


@pytest.mark.parametrize(("line", "why"), [
    ('echo "unterminated', "unterminated double quote"),
    ("echo 'unterminated", "unterminated single quote"),
    ("echo $((", "unterminated"),
    ("echo $(ls", "unterminated"),
])
def test_an_unparsable_command_is_refused_without_a_rule(line: str, why: str) -> None:
    d = evaluate(POLICY, line, groups=[], resource="r")
    assert d.action == Action.BLOCK and d.rule is None
    assert d.refusal().startswith(f"refused: the command cannot be parsed ({why}")
    assert "None" not in d.refusal() and "; refused" not in d.refusal()


def test_the_message_builders() -> None:
    ruled = Decision(Action.BLOCK, "no-rm", "no deleting", "rm x")
    assert ruled.refusal() == "blocked by rule 'no-rm': no deleting"
    bare = Decision(Action.BLOCK, None, "the command cannot be parsed (x)", "x")
    assert bare.refusal() == "refused: the command cannot be parsed (x)"
    already = Decision(Action.BLOCK, None, "refused: the paths of this transfer cannot be checked", "scp -t /x")
    assert already.refusal() == "refused: the paths of this transfer cannot be checked"  # said once
    assert Decision(Action.WARN, "w", "why", "x").warning() == "warning (rule 'w'): why"
    assert Decision(Action.WARN, None, "ls: no rule matched; default is warn", "ls").warning() == \
        "warning (the default of the policy): ls: no rule matched; default is warn"


def test_a_default_block_names_the_default() -> None:
    strict = PolicySet("s", Action.BLOCK, ())
    d = evaluate(strict, "ls", groups=[], resource="r")
    assert d.refusal() == "refused: ls: no rule matched; default is block"


def test_sql_kube_and_transfer_refusals_without_a_rule() -> None:
    sql = evaluate_sql(POLICY, "SELECT ((", groups=[], resource="db")
    assert sql.rule is None and sql.refusal().startswith("refused: the SQL cannot be parsed (")
    dynamic = evaluate_sql(POLICY, "DO $$ BEGIN PERFORM 1; END $$", groups=[], resource="db")
    assert dynamic.action == Action.BLOCK and dynamic.refusal() == (
        "refused: dynamic SQL runs statements the bastion cannot see, and this policy names no approvers")
    secret = evaluate_kube(POLICY, parse_request("GET", "/api/v1/namespaces/default/secrets/x"), groups=[],
                           resource="k")
    assert secret.rule is None and secret.refusal() == (
        "refused: secret values would reach the operator (a guardrail of the bastion: only a rule that names it "
        "lets it through)")
    odd = evaluate_transfer(POLICY, Transfer("upload", "relative/path"), groups=[], resource="r")
    assert odd.rule is None and odd.refusal().startswith("refused: the transfer cannot be judged (")
    for d in (sql, dynamic, secret, odd):
        assert "None" not in d.refusal() and not d.reason.endswith("; refused")


class _Client:
    def __init__(self) -> None:
        self.said: list[str] = []

    def stderr(self, text: str) -> None:
        self.said.append(text)


def _broker() -> tuple[Broker, _Client, list[dict[str, Any]]]:
    audit: list[dict[str, Any]] = []
    store = SimpleNamespace(audit=lambda *a, **kw: audit.append({"args": a, **kw}))
    services = SimpleNamespace(store=store)
    ctx = SimpleNamespace(username="alice", peer="127.0.0.1", who="alice@127.0.0.1")
    client = _Client()
    return Broker(cast(Any, services), cast(Any, ctx), cast(Any, client)), client, audit


async def test_the_exec_form_says_refused_for_an_unparsable_command() -> None:
    broker, client, audit = _broker()
    d = evaluate(POLICY, 'echo "unterminated', groups=[], resource="web", terminal=False)
    out = await broker._enforce_exec("web", "sid", d)
    assert out is not None and not out.ok
    assert out.message == "refused: the command cannot be parsed (unterminated double quote)"
    assert audit and audit[0]["rule"] is None  # the audit event keeps its null rule (data, not text)


async def test_the_exec_form_says_a_warning_and_goes_ahead() -> None:
    broker, client, audit = _broker()
    d = evaluate(POLICY, "uname -a", groups=[], resource="web", terminal=False)
    assert await broker._enforce_exec("web", "sid", d) is None
    assert client.said == ["bastion: warning (rule 'watch-uname'): uname is watched\n"]
    assert not audit


async def test_the_kube_proxy_refuses_an_unjudgeable_request_without_rule_none() -> None:
    noted: list[Decision] = []
    proxy = KubeProxy(cast(Any, None), judge=lambda r: Decision(Action.ALLOW, None, "", ""), hold=cast(Any, None),
                      note=noted.append, withdraw=lambda: None)
    sent = bytearray()
    writer = SimpleNamespace(write=sent.extend)
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET /api/v1/namespaces/default/p%2eds HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                      + proxy.token.encode() + b"\r\n\r\n")
    req = conn.next_event()
    reader = asyncio.StreamReader()
    reader.feed_eof()
    await proxy._request(conn, req, reader, cast(Any, writer))
    assert b"bastion: refused:" in sent and b"None" not in sent
    assert noted and noted[0].rule is None and noted[0].refusal().startswith("refused: the request cannot be judged")
