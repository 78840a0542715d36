"""The PostgreSQL wire proxy against a real server (initdb, SCRAM) with real psql and psycopg as clients."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bastion.proxies.pg.proxy import PgProxy
from bastion.proxies.pg.upstream import Target
from policies.engine import Action, PolicySet, Rule, evaluate_sql
from tests.support.postgres import PgServer, start_postgres
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow

POLICY = PolicySet("db", Action.ALLOW, (
    Rule("no-unbounded-delete", Action.BLOCK, statements=("delete", "update"), traits=("no_where",),
         reason="DELETE/UPDATE need a WHERE"),
    Rule("drop-needs-approval", Action.REQUIRE_APPROVAL, statements=("drop", "truncate"),
         approver_roles=("reviewers",)),
))


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    server = start_postgres()
    server.psql("CREATE USER app PASSWORD 'app-Pw-123'")
    server.psql("CREATE DATABASE app OWNER app")
    server.psql("CREATE TABLE customers(id int primary key, name text, ssn text);"
                "INSERT INTO customers VALUES (1,'Ann','123-45-6789'),(2,'Bob','987-65-4321');"
                "ALTER TABLE customers OWNER TO app", db="app")
    yield server
    server.stop()


class ProxyThread:
    """Run a PgProxy on its own event loop, as the daemon would."""

    def __init__(self, pg: PgServer, sockdir: Path, approval: str = "approved", masking: list | None = None,
                 target: Target | None = None):
        self.loop = asyncio.new_event_loop()
        self.approval = approval
        self.decisions: list[Decision] = []
        self.holds: list[str] = []
        self.withdrawn = asyncio.Event()
        self.proxy = PgProxy(target or Target("127.0.0.1", pg.port, "app", "app"), "app-Pw-123",
                             judge=lambda sql: evaluate_sql(POLICY, sql, groups=[], resource="db"),
                             hold=self._hold, note=self.decisions.append, withdraw=self._withdraw,
                             socket_dir=sockdir, masking=masking)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self.loop).result(10)

    def _withdraw(self) -> None:
        self.withdrawn.set()

    async def _hold(self, d: Any) -> dict[str, Any]:
        self.holds.append(d.text)
        if self.approval == "wait-for-cancel":
            await self.withdrawn.wait()
            return {"status": "withdrawn", "status_reason": "withdrawn by the requester"}
        return {"status": self.approval, "status_reason": f"{self.approval} by bob"}

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


from policies.engine import Decision  # noqa: E402


@pytest.fixture()
def proxy(pg: PgServer, tmp_path: Path) -> Iterator[ProxyThread]:
    p = ProxyThread(pg, tmp_path / "sock")
    yield p
    p.close()


def psql(sockdir: Path, sql: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PGHOST": str(sockdir), "PGUSER": "whoever", "PGDATABASE": "ignored"}
    return subprocess.run(["psql", "-X", "-A", "-t", "-c", sql], capture_output=True, text=True, env=env,
                          timeout=60)


def test_psql_reads_and_blocked_statement_names_rule(proxy: ProxyThread, pg: PgServer) -> None:
    sockdir = proxy.proxy.socket_dir
    out = psql(sockdir, "SELECT name FROM customers ORDER BY id")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Ann\nBob\n"
    out = psql(sockdir, "DELETE FROM customers")
    assert out.returncode == 1
    assert "blocked by rule 'no-unbounded-delete'" in out.stderr
    assert pg.psql("SELECT count(*) FROM customers", db="app").strip() == "2"
    out = psql(sockdir, "SELECT 1; DELETE/**/FROM customers WHERE 1=1; SELECT 2")
    assert "blocked by rule" in out.stderr and pg.psql("SELECT count(*) FROM customers", db="app").strip() == "2"


def test_upstream_credentials_and_key_never_reach_the_client(proxy: ProxyThread) -> None:
    sockdir = proxy.proxy.socket_dir
    with psycopg.connect(host=str(sockdir), user="x", dbname="y") as conn:
        assert conn.info.backend_pid == proxy.proxy.fake_pid
        real = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert real != proxy.proxy.fake_pid
        assert conn.execute("SELECT current_user").fetchone()[0] == "app"
    assert os.stat(proxy.proxy.socket_path).st_mode & 0o077 == 0  # only the session's user may connect
    assert os.stat(proxy.proxy.socket_dir).st_mode & 0o077 == 0


def test_extended_protocol_binary_and_refused_parse(proxy: ProxyThread, pg: PgServer) -> None:
    sockdir = proxy.proxy.socket_dir
    with psycopg.connect(host=str(sockdir), user="x", dbname="y", autocommit=True) as conn:
        cur = conn.cursor(binary=True)
        cur.execute("SELECT id, name FROM customers WHERE id = %s", (2,))
        assert cur.fetchall() == [(2, "Bob")]
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no-unbounded-delete"):
            conn.execute("DELETE FROM customers WHERE %s = %s", (1, 1))
        # the connection is still usable after the refused Parse (discarded until Sync)
        assert conn.execute("SELECT count(*) FROM customers").fetchone()[0] == 2
        # pipelined: a refused Parse in the middle of a pipeline
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no-unbounded-delete"), conn.pipeline():
            conn.execute("SELECT 1")
            conn.execute("UPDATE customers SET name = 'x'")
            conn.execute("SELECT 2")
        assert conn.execute("SELECT 3").fetchone() == (3,)
    assert pg.psql("SELECT string_agg(name, ',' ORDER BY id) FROM customers", db="app").strip() == "Ann,Bob"


def test_approval_hold_denied_and_approved(pg: PgServer, tmp_path: Path) -> None:
    denied = ProxyThread(pg, tmp_path / "d", approval="denied")
    try:
        out = psql(denied.proxy.socket_dir, "DROP TABLE customers")
        assert out.returncode == 1 and "request denied: denied by bob" in out.stderr
        assert denied.holds == ["DROP TABLE customers"]
    finally:
        denied.close()
    pg.psql("CREATE TABLE scratch(x int); ALTER TABLE scratch OWNER TO app", db="app")
    approved = ProxyThread(pg, tmp_path / "a", approval="approved")
    try:
        out = psql(approved.proxy.socket_dir, "DROP TABLE scratch")
        assert out.returncode == 0, out.stderr
    finally:
        approved.close()
    assert pg.psql("SELECT to_regclass('scratch') IS NULL", db="app").strip() == "t"


def test_psql_ctrl_c_withdraws_a_held_statement(pg: PgServer, tmp_path: Path) -> None:
    p = ProxyThread(pg, tmp_path / "c", approval="wait-for-cancel")
    env = {"PATH": "/usr/bin:/bin", "PGHOST": str(p.proxy.socket_dir), "TERM": "xterm", "HOME": str(tmp_path)}
    try:
        with Terminal(["psql", "-X"], env=env) as t:
            t.wait_for(r"=>$|=#$")
            t.send("TRUNCATE customers;\r")
            deadline = time.monotonic() + 10
            while not p.holds and time.monotonic() < deadline:
                time.sleep(0.05)
            assert p.holds == ["TRUNCATE customers;"]
            t.send_key("ctrl-c")  # psql sends a CancelRequest with the key it was given
            t.wait_for(r"request withdrawn")
            t.send("\\q\r")
            t.wait_exit()
    finally:
        p.close()
    assert pg.psql("SELECT count(*) FROM customers", db="app").strip() == "2"


def test_masking_in_binary_and_extended_protocol(pg: PgServer, tmp_path: Path) -> None:
    from bastion.proxies.pg.masking import MaskRule

    p = ProxyThread(pg, tmp_path / "m", masking=[MaskRule("customers", "ssn", "keep_last", 4)])
    try:
        with psycopg.connect(host=str(p.proxy.socket_dir), user="x", dbname="y", autocommit=True) as conn:
            text_rows = conn.execute("SELECT ssn FROM customers WHERE id = %s", (1,)).fetchall()
            assert text_rows == [("*******6789",)]
            binary = conn.cursor(binary=True)
            binary.execute("SELECT ssn, name FROM customers WHERE id = %s", (2,))
            assert binary.fetchall() == [("*******4321", "Bob")]
            # a cast of a masked value that can fail (text to bytea reads escapes) answers a question: refused
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="masking-predicate"):
                binary.execute("SELECT ssn::bytea FROM customers WHERE id = 1")
    finally:
        p.close()


def psql_script(sockdir: Path, script: str, home: Path) -> subprocess.CompletedProcess[str]:
    """A psql script on stdin (meta-commands included), through the proxy, with nothing secret in reach."""
    env = {"PATH": "/usr/bin:/bin", "PGHOST": str(sockdir), "HOME": str(home)}
    return subprocess.run(["psql", "-X", "-w", "-A", "-t", "-f", "-"], input=script, capture_output=True, text=True,
                          env=env, timeout=60)


def test_statements_built_inside_psql_are_judged_on_the_wire(pg: PgServer, tmp_path: Path) -> None:
    """psql variables, \\gexec, \\copy, PREPARE/EXECUTE, comments and dollar quoting: what matters is the text the
    server would execute, and that is what the proxy judges (no keystroke filter in this test)."""
    from bastion.proxies.pg.masking import MaskRule

    p = ProxyThread(pg, tmp_path / "w", approval="denied", masking=[MaskRule("customers", "ssn", "keep_last", 4)])
    try:
        out = psql_script(p.proxy.socket_dir, "\n".join([
            "\\set a 'DELETE FROM'",
            ":a customers;",
            "SELECT 'DELETE FROM customers' \\gexec",
            "PREPARE p AS DELETE FROM customers;",
            "DELETE /* where id = 1 */ FROM customers -- WHERE id = 1",
            ";",
            "SELECT $x$;DELETE FROM customers;$x$ AS harmless;",
            "DO $x$ BEGIN EXECUTE 'DELETE FROM customers'; END $x$;",
            "WITH d AS (DELETE FROM customers RETURNING *) SELECT count(*) FROM d;",
            "\\copy (SELECT ssn FROM customers) TO STDOUT",
            "\\copy customers TO STDOUT",
            "COPY (SELECT ssn FROM customers) TO STDOUT WITH (FORMAT binary);",
            "SELECT ssn FROM customers ORDER BY id;",
        ]) + "\n", tmp_path)
    finally:
        p.close()
    assert out.stderr.count("blocked by rule 'no-unbounded-delete'") == 5, out.stderr
    # dynamic SQL over a masked table could copy masked data anywhere: refused before any reviewer is asked
    assert p.holds == [] and "refused by rule 'masking-copy': code created over masked data" in out.stderr
    assert out.stderr.count("COPY out of masked data is refused") == 3
    assert ";DELETE FROM customers;" in out.stdout  # a dollar-quoted string is a string
    assert "*******6789" in out.stdout and "123-45" not in out.stdout
    assert pg.psql("SELECT count(*) FROM customers", db="app").strip() == "2"


def test_psql_connect_to_a_rogue_server_has_no_password_to_give(proxy: ProxyThread, tmp_path: Path) -> None:
    """\\c to a server that asks for a cleartext password: psql never had the upstream password (the proxy holds
    it and only ever sends it upstream), so the rogue server gets nothing."""
    import socket
    import struct

    rogue = socket.socket()
    rogue.bind(("127.0.0.1", 0))
    rogue.listen()
    rogue.settimeout(30)
    port = rogue.getsockname()[1]
    received: list[bytes] = []

    def serve() -> None:  # one connection: libpq answers "N" to SSL on the same socket, and gives up without a password
        try:
            for _ in range(1):
                conn, _ = rogue.accept()
                with conn:
                    conn.settimeout(10)
                    data = conn.recv(8192)
                    if data[4:8] == struct.pack("!i", 80877103):  # SSLRequest: no
                        conn.sendall(b"N")
                        data = conn.recv(8192)
                    received.append(data)
                    conn.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
                    try:
                        while chunk := conn.recv(8192):
                            received.append(chunk)
                    except OSError:
                        pass
        except OSError:
            return

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        out = psql_script(proxy.proxy.socket_dir, f"\\c 'host=127.0.0.1 port={port} user=app dbname=app'\n", tmp_path)
    finally:
        rogue.close()
        t.join(5)
    assert received, f"psql did not even try the rogue server: the test proves nothing ({out.stderr})"
    assert "no password supplied" in out.stderr or "password" in out.stderr
    assert not any(b"app-Pw-123" in chunk for chunk in received)
    assert not any(chunk[:1] == b"p" for chunk in received[1:])  # no PasswordMessage at all


@pytest.fixture(scope="module")
def pg_tls() -> Iterator[PgServer]:
    server = start_postgres(tls=True)
    server.psql("CREATE USER app PASSWORD 'app-Pw-123'")
    server.psql("CREATE DATABASE app OWNER app")
    yield server
    server.stop()


def test_upstream_tls_verify_full_with_the_resource_ca(pg_tls: PgServer, tmp_path: Path) -> None:
    assert pg_tls.tls is not None
    p = ProxyThread(pg_tls, tmp_path / "t", target=Target("127.0.0.1", pg_tls.port, "app", "app", "verify-full",
                                                           str(pg_tls.tls.ca)))
    try:
        with psycopg.connect(host=str(p.proxy.socket_dir), user="x", dbname="y") as conn:
            row = conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert row is not None and row[0] is True and row[1].startswith("TLS")
    finally:
        p.close()


def test_upstream_tls_refuses_a_server_signed_by_another_ca(pg_tls: PgServer, tmp_path: Path) -> None:
    from bastion.demo.devcerts import make_server_cert

    other = make_server_cert(tmp_path / "other", ca_name="someone else")
    p = ProxyThread(pg_tls, tmp_path / "t", target=Target("127.0.0.1", pg_tls.port, "app", "app", "verify-full",
                                                           str(other.ca)))
    try:
        with pytest.raises(psycopg.OperationalError, match="TLS to the database server failed"):
            psycopg.connect(host=str(p.proxy.socket_dir), user="x", dbname="y")
    finally:
        p.close()


def test_upstream_tls_required_but_not_offered(pg: PgServer, tmp_path: Path) -> None:
    p = ProxyThread(pg, tmp_path / "t", target=Target("127.0.0.1", pg.port, "app", "app", "require"))
    try:
        with pytest.raises(psycopg.OperationalError, match="does not offer TLS"):
            psycopg.connect(host=str(p.proxy.socket_dir), user="x", dbname="y")
    finally:
        p.close()


@pytest.mark.parametrize("auth", ["cleartext", "scram-without-proof"])
def test_upstream_that_fishes_for_the_password_gets_nothing(auth: str, pg: PgServer, tmp_path: Path) -> None:
    """A server (or a man in the middle without TLS) that asks for the cleartext password, or that accepts a SCRAM
    login without proving it knows the password, is refused: the password is never sent in the clear."""
    import socket
    import struct

    rogue = socket.socket()
    rogue.bind(("127.0.0.1", 0))
    rogue.listen()
    rogue.settimeout(30)
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = rogue.accept()
        with conn:
            conn.settimeout(10)
            received.append(conn.recv(8192))
            if auth == "cleartext":
                conn.sendall(b"R" + struct.pack("!ii", 8, 3))
            else:
                mech = b"SCRAM-SHA-256\x00\x00"
                conn.sendall(b"R" + struct.pack("!ii", 8 + len(mech), 10) + mech)
                received.append(conn.recv(8192))
                conn.sendall(b"R" + struct.pack("!ii", 8, 0))  # AuthenticationOk, no server-first/final
            try:
                while chunk := conn.recv(8192):
                    received.append(chunk)
            except OSError:
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    port = rogue.getsockname()[1]
    p = ProxyThread(pg, tmp_path / "r", target=Target("127.0.0.1", port, "app", "app"))
    try:
        why = "authentication method the bastion refuses" if auth == "cleartext" else "did not prove it knows"
        with pytest.raises(psycopg.OperationalError, match=why):
            psycopg.connect(host=str(p.proxy.socket_dir), user="x", dbname="y")
    finally:
        p.close()
        t.join(10)
        rogue.close()
    assert received, "the proxy never reached the rogue server: the test proves nothing"
    assert not any(b"app-Pw-123" in chunk for chunk in received)
