"""ssh -> bastion -> psql -> wire proxy -> a real PostgreSQL (SCRAM): SQL judged at the wire, credential hidden."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.integration.conftest import BastionEnv, start_bastion, stop_bastion, write_config
from tests.support.keys import free_port
from tests.support.postgres import PgServer, start_postgres
from tests.support.review import approve
from tests.support.ssh_client import ssh_argv
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow
PASSWORD = "app-Pw-Never-Shown-42"


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    server = start_postgres()
    server.psql(f"CREATE USER app PASSWORD '{PASSWORD}'")
    server.psql("CREATE DATABASE app OWNER app")
    server.psql("CREATE TABLE customers(id int primary key, name text, ssn text);"
                "INSERT INTO customers VALUES (1,'Ann','123-45-6789'),(2,'Bob','987-65-4321');"
                "ALTER TABLE customers OWNER TO app", db="app")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def db_bastion(pg: PgServer, bastion_env: BastionEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    env = bastion_env
    d = tmp_path_factory.mktemp("pgbastion")
    (d / "state").mkdir()
    (d / "db.pw").write_text(PASSWORD + "\n")
    port = free_port()
    cfg = write_config(d, port, env.keys, env.target, env.target_key, extra_resources=f"""\
  web-db:
    kind: postgres
    description: customers database
    host: 127.0.0.1
    port: {pg.port}
    database: app
    user: app
    credential: {{password_file: {d / 'db.pw'}}}
    tls: {{mode: disable}}
    policy: db
    restrict: true
    masking:
      - {{table: customers, column: ssn, style: keep_last, keep: 4}}
  web-db-open:
    kind: postgres
    description: the same database, interactive psql without restrict (sandboxed)
    host: 127.0.0.1
    port: {pg.port}
    database: app
    user: app
    credential: {{password_file: {d / 'db.pw'}}}
    tls: {{mode: disable}}
    policy: db
    masking:
      - {{table: customers, column: ssn, style: keep_last, keep: 4}}
""", extra_policies="""\
  db:
    default: allow
    rules:
      - {name: no-unbounded-writes, statements: [delete, update], traits: [no_where], action: block,
         reason: DELETE and UPDATE need a WHERE}
      - {name: ddl-needs-approval, statements: [drop, truncate, alter], action: require_approval,
         approvers: {roles: [reviewers], count: 1}}
      - {name: no-server-files, traits: [copy_program, copy_file, dangerous_function], action: block}
""")
    log = d / "out.log"
    proc = start_bastion(cfg, port, log)
    yield {"port": port, "env": env, "dir": d, "log": log}
    stop_bastion(proc)


def sql(b: dict, user: str, text: str) -> subprocess.CompletedProcess[str]:
    env: BastionEnv = b["env"]
    return subprocess.run(ssh_argv(env.keys[user], b["port"], user, "web-db", "--", text, tty=False),
                          capture_output=True, text=True, timeout=60)


def test_select_works_and_unbounded_delete_is_refused(db_bastion: dict, pg: PgServer) -> None:
    out = sql(db_bastion, "alice", "SELECT name FROM customers ORDER BY id")
    assert out.returncode == 0, out.stderr
    assert "Ann" in out.stdout and "Bob" in out.stdout
    out = sql(db_bastion, "alice", "DELETE FROM customers")
    assert out.returncode != 0
    assert "blocked by rule 'no-unbounded-writes'" in out.stderr
    assert pg.psql("SELECT count(*) FROM customers", db="app").strip() == "2"
    out = sql(db_bastion, "alice", "SELECT pg_read_file('/etc/passwd')")
    assert out.returncode != 0 and "no-server-files" in out.stderr


@pytest.mark.parametrize("query", [
    "SELECT ssn FROM customers ORDER BY id",
    "SELECT ssn AS renamed FROM customers ORDER BY id",
    "SELECT * FROM customers ORDER BY id",
    "SELECT ssn || '' FROM customers ORDER BY id",
    "SELECT upper(ssn) FROM customers ORDER BY id",
    "SELECT row_to_json(c) FROM customers c ORDER BY id",
    "SELECT c.* FROM customers c ORDER BY id",
    "SELECT (SELECT ssn FROM customers WHERE id = 1)",
    "WITH x AS (SELECT ssn AS s FROM customers) SELECT s FROM x",
    "SELECT ssn FROM customers UNION ALL SELECT 'x'",
])
def test_sensitive_column_is_masked_however_the_query_is_written(db_bastion: dict, query: str) -> None:
    out = sql(db_bastion, "alice", query)
    assert out.returncode == 0, out.stderr
    assert "123-45" not in out.stdout and "987-65" not in out.stdout, out.stdout
    assert "6789" in out.stdout or "****" in out.stdout


def test_masking_leaves_other_columns_and_refuses_copy_out(db_bastion: dict) -> None:
    out = sql(db_bastion, "alice", "SELECT id, name, ssn FROM customers ORDER BY id")
    assert "Ann" in out.stdout and "*******6789" in out.stdout
    assert sql(db_bastion, "alice", "SELECT count(*) FROM customers").stdout.split()[2] == "2"
    for text in ("COPY customers TO STDOUT", "COPY (SELECT ssn FROM customers) TO STDOUT"):
        out = sql(db_bastion, "alice", text)
        assert out.returncode != 0 and "COPY out of masked data is refused" in out.stderr
    out = sql(db_bastion, "alice", "INSERT INTO customers VALUES (3, 'Eve', '123-45-6789')")
    out = sql(db_bastion, "alice", "CREATE UNIQUE INDEX IF NOT EXISTS u_ssn ON customers(ssn)")
    out = sql(db_bastion, "alice", "INSERT INTO customers VALUES (4, 'Mal', '123-45-6789')")
    assert "123-45-6789" not in out.stderr  # the duplicate-key detail would echo the value


def test_psql_meta_commands_refused_and_password_never_exposed(db_bastion: dict) -> None:
    for text in ("\\! id", "  \\getenv x PGPASSWORD", "\\c postgres"):
        out = sql(db_bastion, "alice", text)
        assert out.returncode == 1 and "meta-commands" in out.stderr
    out = sql(db_bastion, "alice", "SELECT current_setting('application_name')")
    assert PASSWORD not in out.stdout + out.stderr
    for cast in (db_bastion["dir"] / "state" / "recordings").rglob("*.cast"):
        assert PASSWORD not in cast.read_text()
    assert PASSWORD not in db_bastion["log"].read_text()


def test_drop_waits_for_a_reviewer(db_bastion: dict, pg: PgServer) -> None:
    pg.psql("CREATE TABLE scratch(x int); ALTER TABLE scratch OWNER TO app", db="app")
    env: BastionEnv = db_bastion["env"]
    proc = subprocess.Popen(ssh_argv(env.keys["alice"], db_bastion["port"], "alice", "web-db", "--",
                                     "DROP TABLE scratch", tty=False),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    assert "waiting for approval" in proc.stderr.readline()
    with Terminal(ssh_argv(env.keys["bob"], db_bastion["port"], "bob", tty=True), cols=120) as bob:
        bob.wait_for(r"roles: reviewers")
        bob.send_key("f2")
        bob.wait_for(r"alice\s+web-db\s+DROP TABLE scratch")
        approve(bob)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert pg.psql("SELECT to_regclass('scratch') IS NULL", db="app").strip() == "t"


def test_interactive_psql_restricted_masked_and_judged(db_bastion: dict, pg: PgServer) -> None:
    env: BastionEnv = db_bastion["env"]
    with Terminal(ssh_argv(env.keys["alice"], db_bastion["port"], "alice", "web-db", tty=True), cols=120) as t:
        t.wait_for(r"=>$")
        t.send("SELECT id, ssn FROM customers ORDER BY id;\r")
        t.wait_for(r"\*+6789")
        assert "123-45" not in t.screen_text()
        t.send("\\! id\r")  # a shell on the bastion: restricted
        t.wait_for(r"backslash commands are restricted")
        t.send("\\c postgres\r")
        t.send("DELETE FROM customers;\r")
        t.wait_for(r"blocked by rule 'no-unbounded-writes'")
        t.send_key("ctrl-d")
        assert t.wait_exit() == 0
    assert "uid=" not in t.raw_text()
    assert pg.psql("SELECT count(*) FROM customers", db="app").strip() != "0"


def test_unrestricted_interactive_psql_sandboxed_and_judged(db_bastion: dict, pg: PgServer) -> None:
    """Without restrict, meta-commands that leave SQL are refused at the prompt; what psql sends is judged at the
    wire however it was built (variables, \\gexec, \\copy); psql itself has no password to give away."""
    env: BastionEnv = db_bastion["env"]
    before = pg.psql("SELECT count(*) FROM customers", db="app").strip()
    assert before != "0"
    with Terminal(ssh_argv(env.keys["alice"], db_bastion["port"], "alice", "web-db-open", tty=True), cols=120) as t:
        t.wait_for(r"=>$")
        t.send("SELECT id, ssn FROM customers ORDER BY id;\r")
        t.wait_for(r"\*+6789")
        lines = ("\\! id", "\\o |cat", "SELECT 1 \\g |sh", "\\c postgres", "\\setenv PAGER sh")
        for n, line in enumerate(lines, 1):
            t.send(line + "\r")
            t.wait_count(r"blocked by rule 'psql-meta-commands'", n)
        t.send("\\set a 'DELETE FROM customers'\r")
        t.send(":a;\r")
        t.wait_count(r"blocked by rule 'no-unbounded-writes'", 1)
        t.send("SELECT 'DELETE FROM customers' \\gexec\r")
        t.wait_count(r"blocked by rule 'no-unbounded-writes'", 2)
        t.send("\\copy (SELECT ssn FROM customers) TO STDOUT\r")
        t.wait_for(r"COPY out of masked data is refused")
        t.send("\\getenv p PGPASSWORD\r")
        t.send("\\echo [:p]\r")
        t.wait_for(r"\[:p\]")  # unset: psql leaves the reference as it is
        t.send("SELECT current_user;\r")
        t.wait_for(r"app\s")
        t.send_key("ctrl-d")
        assert t.wait_exit() == 0
    assert "uid=" not in t.raw_text() and PASSWORD not in t.raw_text()
    assert pg.psql("SELECT count(*) FROM customers", db="app").strip() == before
