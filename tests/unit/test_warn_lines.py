"""A ``warn`` decision is said to the operator, then the command runs: the typed-line filter says it like a block
(without quoting a line typed without echo, and not at all for the answer to a secret prompt), the PostgreSQL proxy
sends a NoticeResponse before the statement is forwarded (a Query or a Parse alike), and the Kubernetes proxy a
``Warning`` header in the form kubectl prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bastion.proxies.kube.proxy import warning_header
from bastion.proxies.pg.protocol import notice_response, parse_error
from bastion.proxies.pg.proxy import PgProxy
from bastion.proxies.pg.upstream import Target
from bastion.terminal.cmdfilter import UNECHOED, WITHHELD
from policies.engine import Action, Decision, PolicySet, Rule, evaluate, evaluate_sql
from tests.unit.test_cmdfilter import Harness, answer_sudo, settle

POLICY = PolicySet("p", Action.ALLOW, (
    Rule("no-rm", Action.BLOCK, programs=("rm",), reason="no deleting"),
    Rule("watch-uname", Action.WARN, programs=("uname",), reason="uname is watched"),
    Rule("watch-downloads", Action.WARN, programs=("curl",)),  # no reason: the engine's names the program
))
LINE = b"bastion: warning (rule 'watch-uname'): uname is watched"


def harness(**kw: Any) -> Harness:
    h = Harness(**kw)
    h.f.judge = lambda t: evaluate(POLICY, t, groups=[], resource="r", interactive=True)
    return h


async def test_a_warned_line_is_said_then_sent() -> None:
    h = harness()
    h.f.input(b"uname -a\r")
    await settle()
    assert h.sent == b"uname -a\r"  # it runs
    assert LINE in h.client and h.client.count(b"bastion: warning") == 1
    assert h.notes == [("uname -a", Action.WARN, False)]  # the marker and audit event stay
    h.f.input(b"echo honest\r")
    await settle()
    assert h.sent.endswith(b"echo honest\r") and h.client.count(b"bastion:") == 1  # nothing said for it


async def test_a_warned_line_typed_without_echo_is_not_quoted() -> None:
    h = harness(echo=False)
    h.f.input(b"curl http://hidden-host.example/\r")
    await settle()
    assert h.sent == b"curl http://hidden-host.example/\r"
    said = h.client.decode()
    assert "warning (rule 'watch-downloads')" in said and "without echo" in said
    assert "curl" not in said and "hidden-host" not in said
    assert h.notes == [(f"curl http://hidden-host.example/ {UNECHOED}", Action.WARN, True)]


async def test_the_answer_to_a_secret_prompt_gets_no_warning() -> None:
    h = harness()
    h.prompt = b""
    h.f.input(b"sudo -v\r")
    await settle()
    await answer_sudo(h, b"uname-looking-secret")  # judged as `uname-looking-secret`: no rule, allowed
    await answer_sudo(h, b"uname -s3cret")  # a secret that parses as a warned command
    assert h.sent.endswith(b"uname -s3cret\r")
    assert b"bastion: warning" not in h.client and "s3cret" not in h.recorded()
    assert h.notes[-1] == (WITHHELD, Action.WARN, True)


def test_the_kube_warning_header_is_what_client_go_parses() -> None:
    d = Decision(Action.WARN, "watch", 'say "hi" \\ then\tgo \u00e9', "get pods")
    value = warning_header(d)
    assert value == ('299 - "bastion: warning (rule \'watch\'): say \\"hi\\" \\\\ then go \u00e9"').encode()
    assert all(b >= 0x20 for b in value)  # no control characters (client-go drops such a header)
    long = warning_header(Decision(Action.WARN, "w", "x" * 10_000, ""))
    assert len(long) < 2100


def test_the_notice_response_is_a_notice() -> None:
    msg = notice_response("bastion: warning (rule 'w'): why")
    assert msg[:1] == b"N"
    fields = parse_error(msg[5:])
    assert fields["S"] == "NOTICE" and fields["C"] == "01000" and fields["M"] == "bastion: warning (rule 'w'): why"


class _Writer:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data


def _proxy(tmp_path: Path) -> tuple[PgProxy, list[Decision]]:
    policy = PolicySet("db", Action.ALLOW, (
        Rule("watch-customers", Action.WARN, tables=("customers",), reason="customer rows are personal data"),
    ))
    noted: list[Decision] = []

    async def hold(d: Decision) -> dict[str, Any]:
        raise AssertionError("nothing is held")

    proxy = PgProxy(Target("127.0.0.1", 1, "app", "app"), "pw",
                    judge=lambda sql: evaluate_sql(policy, sql, groups=[], resource="db"), hold=hold,
                    note=noted.append, withdraw=lambda: None, socket_dir=tmp_path)
    return proxy, noted


async def test_the_pg_proxy_sends_a_notice_for_a_warned_statement(tmp_path: Path) -> None:
    proxy, noted = _proxy(tmp_path)
    writer = _Writer()
    proxy.client = writer  # type: ignore[assignment]
    for analyses in ([], None):  # a Query (simple protocol), a Parse (extended)
        writer.data.clear()
        refusal, d, _ = await proxy._decide("SELECT name FROM customers", analyses)
        assert refusal is None and d.action == Action.WARN  # it goes on to the server
        assert writer.data[:1] == b"N"
        assert parse_error(bytes(writer.data[5:]))["M"] == (
            "bastion: warning (rule 'watch-customers'): customer rows are personal data")
        writer.data.clear()
        refusal, d, _ = await proxy._decide("SELECT 1", analyses)
        assert refusal is None and d.action == Action.ALLOW and not writer.data
    assert [d.action for d in noted] == [Action.WARN, Action.ALLOW] * 2


async def test_the_pg_proxy_refuses_unparsable_sql_without_rule_none(tmp_path: Path) -> None:
    proxy, _ = _proxy(tmp_path)
    refusal, d, _ = await proxy._decide("SELECT ((", [])
    assert refusal is not None and d.rule is None
    fields = parse_error(refusal[5:])
    assert fields["M"].startswith("bastion: refused: the SQL cannot be parsed (") and "None" not in fields["M"]
