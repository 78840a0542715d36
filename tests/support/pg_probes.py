"""Hostile probes against masked PostgreSQL columns, and the harness that runs them through a PgProxy.

The database holds ``customers(id, name, email, ssn)`` with four SSNs; a **twin** database holds the same rows with
SSNs that differ in every hidden digit and share the last four (what ``keep_last 4`` shows anyway). A probe is judged
three ways on everything the client receives (every wire message through a byte tap, and what psql or psycopg make of
it):

- **no clear value**: none of the clear SSNs nor an obvious transform of one (digits only, reversed, letters for
  digits, hex, base64, md5/sha*, digits split by separators, ASCII codes, binary integers);
- **non-interference**: the same probe through a proxy on the twin gives the client exactly the same bytes, so
  nothing it sees depends on the hidden digits (this is what catches oracles, partial values in errors, ordering,
  and transforms no list could name);
- a refusal by the bastion says what and why (names the masked column, a ``masking-*`` rule or "masked").

Every probe is first shown to reveal the hidden digits without the bastion (the self-check), so that a pass proves
something. Nothing here talks to anything but loopback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from bastion.proxies.pg.masking import MaskRule
from bastion.proxies.pg.proxy import PgProxy
from bastion.proxies.pg.upstream import Target
from policies.engine import Decision, PolicySet, evaluate_sql
from tests.support.postgres import PgServer

APP_PASSWORD = "app-Pw-123"
CLEAR = {1: "536-81-2947", 2: "401-73-5588", 3: "672-30-1945", 4: "914-26-8073"}
TWIN = {1: "107-09-2947", 2: "268-14-5588", 3: "215-87-1945", 4: "350-41-8073"}  # every hidden digit differs
NAMES = {1: ("Ann", "ann@example.com"), 2: ("Bob", "bob@example.com"), 3: ("Cid", "cid@example.com"),
         4: ("Dee", "dee@example.com")}
MASKED = {i: "*******" + s[-4:] for i, s in CLEAR.items()}
MASK = MaskRule("customers", "ssn", "keep_last", 4)
WHY = r"\bssn\b|masking-|masked"  # what a refusal by the bastion must mention


def schema_sql(ssns: dict[int, str]) -> str:
    """The database as its owner creates it (run as ``app``)."""
    rows = ", ".join(f"({i}, '{NAMES[i][0]}', '{NAMES[i][1]}', '{s}')" for i, s in ssns.items())
    return f"""
CREATE TABLE customers(id int PRIMARY KEY, name text NOT NULL, email text, ssn text);
INSERT INTO customers VALUES {rows};
CREATE UNIQUE INDEX customers_ssn_key ON customers(ssn);
CREATE TABLE orders(id int PRIMARY KEY, customer_id int REFERENCES customers(id), total numeric);
INSERT INTO orders VALUES (1, 1, 10.50), (2, 2, 20.00), (3, 1, 5.25);
CREATE VIEW cv AS SELECT * FROM customers;
CREATE VIEW cv2 AS SELECT id, ssn AS tax_id FROM customers;
CREATE VIEW cv3 AS SELECT id, ssn || '' AS s FROM customers;
CREATE MATERIALIZED VIEW cmv AS SELECT id, ssn FROM customers;
CREATE FUNCTION leak() RETURNS SETOF text LANGUAGE sql STABLE AS 'SELECT ssn FROM customers ORDER BY id';
CREATE FUNCTION leak_one(int) RETURNS text LANGUAGE sql STABLE AS 'SELECT ssn FROM customers WHERE id = $1';
CREATE TYPE mood AS ENUM ('ok');
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
"""


def setup_databases(pg: PgServer) -> None:
    """``app`` (the real SSNs) and ``apptwin`` (the twin SSNs), both owned by ``app``."""
    pg.psql(f"CREATE USER app PASSWORD '{APP_PASSWORD}'")
    for db, ssns in (("app", CLEAR), ("apptwin", TWIN)):
        create_database(pg, db, ssns)


def create_database(pg: PgServer, db: str, ssns: dict[int, str], extensions: tuple[str, ...] = ()) -> None:
    pg.psql(f"CREATE DATABASE {db} OWNER app")
    for ext in extensions:
        pg.psql(f"CREATE EXTENSION IF NOT EXISTS {ext}", db=db)
    as_app(pg, schema_sql(ssns), db)


def as_app(pg: PgServer, sql: str, db: str = "app") -> str:
    """SQL as the table owner straight to the server (no bastion)."""
    env = {"PATH": "/usr/bin:/bin", "PGPASSWORD": APP_PASSWORD}
    out = subprocess.run(["psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
                          str(pg.port), "-U", "app", "-d", db, "-c", sql], capture_output=True, text=True, env=env,
                         timeout=60)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return out.stdout


# -- what a leak looks like ---------------------------------------------------------------------------------------
def _numeric_binary(n: int) -> bytes:
    digits: list[int] = []
    while n:
        digits.insert(0, n % 10000)
        n //= 10000
    return struct.pack("!hhhh", len(digits), len(digits) - 1, 0, 0) + struct.pack(f"!{len(digits)}h", *digits)


@dataclass(frozen=True)
class Forms:
    """The recognisable forms of one clear value."""

    value: str
    text: tuple[tuple[str, str], ...]        # (what, string): case-insensitive substring
    patterns: tuple[tuple[str, re.Pattern[str]], ...]
    binary: tuple[tuple[str, bytes], ...]   # in raw wire bytes only


def forms(value: str) -> Forms:
    digits = value.replace("-", "")
    raw = value.encode()
    letters = value.translate(str.maketrans("0123456789", "abcdefghij"))
    text = [
        ("clear", value), ("digits only", digits), ("reversed", value[::-1]), ("digits reversed", digits[::-1]),
        ("letters for digits", letters), ("letters for digits, reversed", letters[::-1]),
        ("hex", raw.hex()), ("hex, digits only", digits.encode().hex()),
        ("base64", base64.b64encode(raw).decode().rstrip("=")),
        ("md5", hashlib.md5(raw).hexdigest()),  # noqa: S324 - what PostgreSQL's md5() gives
        ("sha224", hashlib.sha224(raw).hexdigest()), ("sha256", hashlib.sha256(raw).hexdigest()),
        ("sha384", hashlib.sha384(raw).hexdigest()), ("sha512", hashlib.sha512(raw).hexdigest()),
        ("bits", "".join(f"{b:08b}" for b in raw)), ("integer as hex", f"{int(digits):x}"),
        ("digits as a number", f"{int(digits):,}"),
    ]
    sep = r"[^0-9]{0,6}"
    patterns = [
        ("digits split by separators", re.compile(sep.join(digits))),
        ("digits split by separators, reversed", re.compile(sep.join(digits[::-1]))),
        ("ASCII codes", re.compile(r"\D{1,4}".join(str(b) for b in raw[:9]))),
    ]
    n = int(digits)
    binary = [("int4", struct.pack("!i", n)), ("int8", struct.pack("!q", n)), ("float8", struct.pack("!d", float(n))),
              ("numeric", _numeric_binary(n))]
    return Forms(value, tuple(text), tuple(patterns), tuple(binary))


CLEAR_FORMS = [forms(v) for v in CLEAR.values()]
SSN_SHAPE = re.compile(r"(?<![0-9])[0-9]{3}-[0-9]{2}-[0-9]{4}(?![0-9])")


def _found(text: str, raw: bytes) -> dict[str, str]:
    low, rawlow = text.lower(), raw.lower()
    found: dict[str, str] = {}
    for f in CLEAR_FORMS:
        for what, s in f.text:
            if s.lower() in low or (raw and s.lower().encode() in rawlow):
                found[f"{what} of {f.value}"] = s
        for what, rx in f.patterns:
            if m := rx.search(text):
                found[f"{what} of {f.value}"] = m.group(0)
        for what, b in f.binary:
            if raw and b in raw:
                found[f"{what} of {f.value} (binary)"] = b.hex()
    for m in SSN_SHAPE.finditer(text):
        found[f"an SSN-shaped value {m.group(0)}"] = m.group(0)
    return found


def leaks_in(text: str, raw: bytes = b"", sent: tuple[str, ...] = ()) -> list[str]:
    """Every clear value (or transform of one) in ``text`` / ``raw``. What the client sent itself is not a leak:
    forms already present in the statements it sent are left out."""
    mine = _found("\n".join(sent), "\n".join(sent).encode())
    return [f"{what} ({sample!r})" for what, sample in _found(text, raw).items() if what not in mine]


# -- the wire, as the client receives it ---------------------------------------------------------------------------
def backend_messages(raw: bytes) -> list[tuple[bytes, bytes]]:
    """Split what a client received into (type, payload); a leading one-byte SSL/GSS answer is skipped."""
    out: list[tuple[bytes, bytes]] = []
    pos = 0
    if raw[:1] in (b"N", b"S", b"G") and raw[1:2] == b"R":
        pos = 1
    while pos + 5 <= len(raw):
        kind = raw[pos:pos + 1]
        (length,) = struct.unpack("!i", raw[pos + 1:pos + 5])
        if length < 4 or pos + 1 + length > len(raw):
            out.append((b"?", raw[pos:]))
            break
        out.append((kind, raw[pos + 5:pos + 1 + length]))
        pos += 1 + length
    return out


def error_fields(payload: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in payload.split(b"\x00"):
        if part:
            out[part[:1].decode("latin-1")] = part[1:].decode("utf-8", "replace")
    return out


def data_row(payload: bytes) -> list[bytes | None]:
    (n,) = struct.unpack("!h", payload[:2])
    pos, cols = 2, []
    for _ in range(n):
        (ln,) = struct.unpack("!i", payload[pos:pos + 4])
        pos += 4
        cols.append(None if ln < 0 else payload[pos:pos + ln])
        pos += max(ln, 0)
    return cols


def wire_view(messages: list[tuple[bytes, bytes]]) -> list[str]:
    """What the client received that can carry data, one line per message, comparable between two runs: rows,
    copy data, command tags, errors and notices (every field: SQLSTATE and the server's source location say which
    check failed, which can depend on the value), notifications (without the server's pid), parameter changes,
    column names. Row descriptions' table OIDs (they differ between databases) and backend keys are left out."""
    out: list[str] = []
    for kind, payload in messages:
        if kind == b"D":
            out.append("D " + " | ".join("NULL" if c is None else c.decode("utf-8", "backslashreplace")
                                         for c in data_row(payload)))
        elif kind in (b"E", b"N"):
            f = error_fields(payload)
            out.append(kind.decode() + " " + " | ".join(f"{k}={v}" for k, v in f.items()))
        elif kind == b"A":
            out.append("A " + payload[4:].decode("utf-8", "backslashreplace"))
        elif kind in (b"d", b"C", b"S", b"?"):
            out.append(kind.decode() + " " + payload.decode("utf-8", "backslashreplace"))
        elif kind == b"T":
            names = []
            pos = 2
            for _ in range(struct.unpack("!h", payload[:2])[0]):
                end = payload.index(b"\x00", pos)
                names.append(payload[pos:end].decode("utf-8", "replace"))
                pos = end + 19
            out.append("T " + ", ".join(names))
    return out


class WireTap:
    """A unix socket in front of the proxy's that records every byte sent back to the client."""

    def __init__(self, target: Path, sockdir: Path):
        self.target = target
        self.dir = sockdir
        sockdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = sockdir / ".s.PGSQL.5432"
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(self.path))
        self.server.listen(8)
        self.received = bytearray()
        self.active = 0
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            with self.cond:
                self.active += 1
            threading.Thread(target=self._pump, args=(client,), daemon=True).start()

    def _pump(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(str(self.target))
            open_ = {client: upstream, upstream: client}
            while open_:
                ready, _, _ = select.select(list(open_), [], [], 30)
                if not ready:
                    break
                for s in ready:
                    try:
                        data = s.recv(65536)
                    except OSError:
                        data = b""
                    other = open_[s]
                    if not data:
                        del open_[s]
                        with contextlib.suppress(OSError):
                            other.shutdown(socket.SHUT_WR)
                        continue
                    if s is upstream:
                        with self.cond:
                            self.received += data
                    with contextlib.suppress(OSError):
                        other.sendall(data)
        finally:
            client.close()
            upstream.close()
            with self.cond:
                self.active -= 1
                self.cond.notify_all()

    def take(self, timeout: float = 30) -> bytes:
        """Everything received since the last take, once every connection through the tap is closed (so the
        proxy has finished with it too)."""
        with self.cond:
            self.cond.wait_for(lambda: self.active == 0, timeout)
            data = bytes(self.received)
            self.received.clear()
        return data

    def close(self) -> None:
        self.server.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


# -- a proxy on its own event loop, as the daemon runs it -------------------------------------------------------------
Hold = Callable[[Decision], Awaitable[dict[str, Any]]]


class ProxyThread:
    def __init__(self, pg: PgServer, sockdir: Path, policy: PolicySet, *, database: str = "app",
                 masking: list[MaskRule] | None = None, approval: str = "denied"):
        self.loop = asyncio.new_event_loop()
        self.approval = approval
        self.holds: list[str] = []
        self.decisions: list[Decision] = []
        self.proxy = PgProxy(Target("127.0.0.1", pg.port, database, "app"), APP_PASSWORD,
                             judge=lambda sql: evaluate_sql(policy, sql, groups=["ops"], resource="db"),
                             hold=self._hold, note=self.decisions.append, withdraw=lambda: None,
                             socket_dir=sockdir, masking=masking)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self.loop).result(10)

    async def _hold(self, d: Decision) -> dict[str, Any]:
        self.holds.append(d.text)
        return {"status": self.approval, "status_reason": f"{self.approval} by bob"}

    @property
    def upstream_pid(self) -> int | None:
        up = self.proxy.upstream
        return up.pid if up is not None else None

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


# -- running SQL ------------------------------------------------------------------------------------------------------
SEP = "\x1f"
PSQL = ["psql", "-X", "-A", "-t", "-F", SEP, "-v", "VERBOSITY=verbose", "-v", "SHOW_CONTEXT=always"]


@dataclass
class Run:
    """One client session: what psql printed and what came over the wire."""

    statements: tuple[str, ...]
    stdout: str
    stderr: str
    raw: bytes = b""
    messages: list[tuple[bytes, bytes]] = field(default_factory=list)

    @property
    def client_text(self) -> str:
        return self.stdout + "\n" + self.stderr

    @property
    def errors(self) -> list[dict[str, str]]:
        return [error_fields(p) for k, p in self.messages if k == b"E"]

    @property
    def refusals(self) -> list[dict[str, str]]:
        """ErrorResponses the bastion wrote itself."""
        return [e for e in self.errors if e.get("M", "").startswith("bastion")]

    @property
    def lost(self) -> bool:
        t = self.stderr
        return ("server closed the connection" in t or "connection to server was lost" in t
                or "FATAL" in t or any(e.get("S") == "FATAL" for e in self.errors))

    def view(self) -> list[str]:
        return wire_view(self.messages)


def psql_env(host: str, port: int | None = None, db: str = "app") -> dict[str, str]:
    env = {"PATH": "/usr/bin:/bin", "PGHOST": host, "PGUSER": "app", "PGDATABASE": db, "PGCONNECT_TIMEOUT": "10",
           "HOME": "/nonexistent", "PGAPPNAME": "probe"}
    if port is not None:
        env |= {"PGPORT": str(port), "PGPASSWORD": APP_PASSWORD}
    return env


def run_psql(statements: tuple[str, ...], env: dict[str, str], tap: WireTap | None = None) -> Run:
    """Each statement its own ``-c`` (its own Query message), in one session."""
    if tap is not None:
        tap.take()
    args = [a for s in statements for a in ("-c", s)]
    out = subprocess.run([*PSQL, *args], capture_output=True, text=True, env=env, timeout=60)
    run = Run(statements, out.stdout, out.stderr)
    if tap is not None:
        run.raw = tap.take()
        run.messages = backend_messages(run.raw)
    return run


def direct(pg: PgServer, statements: tuple[str, ...], db: str = "app") -> Run:
    """The same statements straight to the server as the table owner: what the probe gets with no bastion."""
    return run_psql(statements, psql_env("127.0.0.1", pg.port, db))


class Direct:
    """One session straight to the server as the table owner, reused probe after probe (``DISCARD ALL`` between
    them): what a probe gets with no bastion, rendered one line per result."""

    def __init__(self, pg: PgServer, db: str = "app"):
        import psycopg

        self.conn = psycopg.connect(host="127.0.0.1", port=pg.port, user="app", password=APP_PASSWORD, dbname=db,
                                    autocommit=True)
        self.notices: list[str] = []
        self.conn.add_notice_handler(lambda d: self.notices.append(f"notice {diag_fields(d)}"))

    def run(self, statements: tuple[str, ...]) -> list[str]:
        from psycopg.pq import DiagnosticField, ExecStatus

        pgc = self.conn.pgconn
        out: list[str] = []
        for sql in statements:
            res = pgc.exec_(sql.encode())
            status = res.status
            if status == ExecStatus.TUPLES_OK:
                out += ["row " + " | ".join("NULL" if v is None else bytes(v).decode("utf-8", "backslashreplace")
                                            for v in (res.get_value(r, c) for c in range(res.nfields)))
                        for r in range(res.ntuples)]
            elif status == ExecStatus.COPY_OUT:
                while True:
                    n, data = pgc.get_copy_data(0)
                    if n < 0:
                        break
                    out.append("copy " + bytes(data).decode("utf-8", "backslashreplace"))
                while (more := pgc.get_result()) is not None:
                    res = more
            if res.status == ExecStatus.FATAL_ERROR:
                out.append("error " + " | ".join(f"{f.name}={v.decode('utf-8', 'replace')}" for f in DiagnosticField
                                                 if (v := res.error_field(f)) is not None))
            else:
                out.append(f"status {(res.command_status or b'').decode()}")
            out += self.notices
            self.notices.clear()
            while (n := pgc.notifies()) is not None:
                out.append(f"notify {n.relname.decode()} {n.extra.decode('utf-8', 'replace')}")
        if self.conn.info.transaction_status != 0:
            pgc.exec_(b"ROLLBACK")
        pgc.exec_(b"DISCARD ALL")
        return out

    def close(self) -> None:
        self.conn.close()


def normalise(text: str) -> str:
    """Drop what differs between two databases for reasons other than the data (server pids)."""
    return re.sub(r"(server process with PID|process) \d+", r"\1 N", text)


def first_difference(a: list[str], b: list[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"#{i}: real {x[:300]!r}\n     twin {y[:300]!r}"
    return f"lengths {len(a)} vs {len(b)}: {(a[len(b):] or b[len(a):])[:2]!r}"


# -- the probes --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Probe:
    cls: str
    id: str
    sql: tuple[str, ...]
    wrap: bool = False  # inside BEGIN ... ROLLBACK (each statement its own Query)
    why: str = WHY

    @property
    def parallel(self) -> bool:
        """Safe to run beside others: takes no lock, leaves nothing another session could see."""
        return not self.wrap and self.cls != "copy-into"

    @property
    def statements(self) -> tuple[str, ...]:
        return ("BEGIN", *self.sql, "ROLLBACK") if self.wrap else self.sql

    @property
    def param_id(self) -> str:
        return f"{self.cls}:{self.id}"


def P(cls: str, id: str, *sql: str, wrap: bool = False, why: str = WHY) -> Probe:  # noqa: N802 - a table row
    return Probe(cls, id, sql, wrap, why)


DYNAMIC = WHY + r"|dynamic"

CAST_TYPES = [
    "int", "integer", "bigint", "smallint", "numeric", "numeric(12,2)", "real", "float8", "double precision",
    "date", "timestamp", "timestamptz", "time", "timetz", "interval", "bool", "inet", "cidr", "macaddr", "macaddr8",
    "uuid", "json", "jsonb", "jsonpath", "xml", "money", "bit(11)", "varbit", "bytea", "point", "line", "lseg",
    "box", "path", "polygon", "circle", "int[]", "text[]", "int4range", "daterange", "regclass", "regtype",
    "regproc", "regoper", "regnamespace", "regrole", "regconfig", "regdictionary", "regcollation",
    "oid", "xid", "xid8", "cid", "tid", "pg_lsn", "pg_snapshot", "txid_snapshot", "tsvector", "tsquery", "mood",
    "posint", "customers", "int2vector", "oidvector", "aclitem", "name", "char(20)", "varchar(20)",
]

PROBES: list[Probe] = [P("cast", t, f"SELECT ssn::{t} FROM customers") for t in CAST_TYPES] + [
    # -- functions and places where a failing conversion echoes the value ---------------------------------------
    P("error", "cast-syntax", "SELECT CAST(ssn AS integer) FROM customers"),
    P("error", "text-then-int", "SELECT ssn::text::int FROM customers"),
    P("error", "lower-int", "SELECT lower(ssn)::int FROM customers"),
    P("error", "upper-numeric", "SELECT upper(ssn)::numeric FROM customers"),
    P("error", "concat-int", "SELECT (ssn || '!')::int FROM customers"),
    P("error", "format-bigint", "SELECT format('%s', ssn)::bigint FROM customers"),
    P("error", "xmlparse-document", "SELECT xmlparse(document ssn) FROM customers"),
    P("error", "xmlparse-content", "SELECT xmlparse(content '<a>' || ssn) FROM customers"),
    P("error", "to-number", "SELECT to_number(ssn, '999999999') FROM customers"),
    P("error", "to-date", "SELECT to_date(ssn, 'YYYY-MM-DD') FROM customers"),
    P("error", "to-timestamp", "SELECT to_timestamp(ssn, 'YYYY-MM-DD') FROM customers"),
    P("error", "make-date", "SELECT make_date(substr(ssn, 1, 3)::int, substr(ssn, 5, 2)::int, 1) FROM customers"),
    P("error", "json-text", """SELECT ('{"a": ' || ssn || '}')::jsonb FROM customers"""),
    P("error", "json-populate", "SELECT json_populate_record(NULL::orders, json_build_object('id', ssn)) "
                                "FROM customers"),
    P("error", "json-to-record", "SELECT x.* FROM customers, json_to_record(json_build_object('a', ssn)) "
                                 "AS x(a int)"),
    P("error", "where-id-eq", "SELECT * FROM customers WHERE id = ssn::int"),
    P("error", "where-cast", "SELECT id FROM customers WHERE ssn::int > 0"),
    P("error", "order-by-cast", "SELECT id FROM customers ORDER BY ssn::int"),
    P("error", "group-by-cast", "SELECT count(*) FROM customers GROUP BY ssn::int"),
    P("error", "having-cast", "SELECT count(*) FROM customers HAVING max(ssn)::int > 0"),
    P("error", "case-second-row", "SELECT CASE WHEN id = 2 THEN ssn::int END FROM customers"),
    P("error", "scalar-subquery", "SELECT (SELECT ssn::int FROM customers WHERE id = 3)"),
    P("error", "cte-materialized", "WITH x AS MATERIALIZED (SELECT ssn::int AS v FROM customers) SELECT 1 FROM x"),
    P("error", "join-on-cast", "SELECT o.id FROM orders o JOIN customers c ON o.id = c.ssn::int"),
    P("error", "values-cast", "VALUES ((SELECT ssn FROM customers WHERE id = 4)::int)"),
    P("error", "regclass-fn", "SELECT nextval(ssn) FROM customers"),
    P("error", "privilege-fn", "SELECT has_table_privilege(ssn, 'select') FROM customers"),
    P("error", "current-setting", "SELECT current_setting(ssn) FROM customers"),
    P("error", "encoding-name", "SELECT convert_from('x'::bytea, ssn) FROM customers"),
    P("error", "date-part-unit", "SELECT date_part(ssn, now()) FROM customers"),
    P("error", "encode-format", "SELECT encode('x'::bytea, ssn) FROM customers"),
    P("error", "generate-series", "SELECT generate_series(1, ssn::int) FROM customers"),
    P("error", "view-cast", "SELECT ssn::int FROM cv"),
    P("error", "renamed-view-cast", "SELECT tax_id::int FROM cv2"),
    P("error", "computed-view-cast", "SELECT s::date FROM cv3"),
    P("error", "matview-cast", "SELECT ssn::int FROM cmv"),
    P("error", "field-of-row-cast", "SELECT (c).ssn::int FROM customers c"),
    P("error", "json-field-cast", "SELECT (to_json(c)->>'ssn')::int FROM customers c"),
    P("error", "row-text-cast", "SELECT c::text::int FROM customers c"),
    # -- unique, not-null and check violations: DETAIL carries the key or the whole failing row ----------------
    P("constraint", "unique-insert", "INSERT INTO customers VALUES (9, 'Eve', 'e@x', "
                                     "(SELECT ssn FROM customers WHERE id = 1))", wrap=True),
    P("constraint", "unique-update", "UPDATE customers SET ssn = (SELECT ssn FROM customers WHERE id = 2) "
                                     "WHERE id = 1", wrap=True),
    P("constraint", "not-null-update", "UPDATE customers SET name = NULL WHERE id = 1", wrap=True),
    P("constraint", "not-null-insert-select", "INSERT INTO customers SELECT id + 100, NULL, email, ssn "
                                              "FROM customers", wrap=True),
    P("constraint", "not-null-on-conflict", "INSERT INTO customers VALUES (1, 'x', 'y', 'z') "
                                            "ON CONFLICT (id) DO UPDATE SET name = NULL", wrap=True),
    P("constraint", "not-null-merge", "MERGE INTO customers c USING (VALUES (1)) v(id) ON c.id = v.id "
                                      "WHEN MATCHED THEN UPDATE SET name = NULL", wrap=True),
    P("constraint", "unique-copy", "CREATE TEMP TABLE u(v text UNIQUE)", "INSERT INTO u SELECT ssn FROM customers",
      "INSERT INTO u SELECT ssn FROM customers WHERE id = 1", wrap=True),
    P("constraint", "check-copy", "CREATE TEMP TABLE ck(v text CHECK (v = ''))",
      "INSERT INTO ck SELECT ssn FROM customers", wrap=True),
    P("constraint", "foreign-key", "CREATE TABLE fk(v text REFERENCES customers(ssn))",
      "INSERT INTO fk SELECT ssn FROM customers WHERE id = 3", "DELETE FROM customers WHERE id = 3", wrap=True),
    P("constraint", "index-expression", "CREATE INDEX ON customers ((ssn::int))", wrap=True),
    P("constraint", "add-check", "ALTER TABLE customers ADD CONSTRAINT k CHECK (ssn::int > 0)", wrap=True),
    # -- whole-row references ---------------------------------------------------------------------------------
    P("whole-row", "table-name", "SELECT customers FROM customers"),
    P("whole-row", "alias", "SELECT c FROM customers c"),
    P("whole-row", "alias-one-row", "SELECT c FROM customers c WHERE id = 1"),
    P("whole-row", "star-of-row", "SELECT (c).* FROM customers c"),
    P("whole-row", "field-of-row", "SELECT (c).ssn FROM customers c"),
    P("whole-row", "row-star", "SELECT ROW(c.*) FROM customers c"),
    P("whole-row", "row-star-text", "SELECT ROW(c.*)::text FROM customers c"),
    P("whole-row", "row-text", "SELECT c::text FROM customers c"),
    P("whole-row", "table-text", "SELECT customers::text FROM customers"),
    P("whole-row", "to-json", "SELECT to_json(c) FROM customers c"),
    P("whole-row", "to-json-star", "SELECT to_json(c.*) FROM customers c"),
    P("whole-row", "row-to-json", "SELECT row_to_json(c) FROM customers c"),
    P("whole-row", "to-jsonb", "SELECT to_jsonb(c) FROM customers c"),
    P("whole-row", "json-agg", "SELECT json_agg(c) FROM customers c"),
    P("whole-row", "jsonb-agg", "SELECT jsonb_agg(c) FROM customers c"),
    P("whole-row", "array-agg", "SELECT array_agg(c) FROM customers c"),
    P("whole-row", "array", "SELECT ARRAY[c] FROM customers c"),
    P("whole-row", "format", "SELECT format('%s', c) FROM customers c"),
    P("whole-row", "concat", "SELECT concat(c) FROM customers c"),
    P("whole-row", "concat-ws", "SELECT concat_ws(',', c, 1) FROM customers c"),
    P("whole-row", "subquery-row", "SELECT x FROM (SELECT * FROM customers) x"),
    P("whole-row", "subquery-one-column", "SELECT t FROM (SELECT ssn FROM customers) t"),
    P("whole-row", "row-to-json-subquery", "SELECT row_to_json(t) FROM (SELECT id, ssn AS s FROM customers) t"),
    P("whole-row", "jsonb-each", "SELECT jsonb_each_text(to_jsonb(c)) FROM customers c"),
    P("whole-row", "jsonb-each-lateral", "SELECT j.* FROM customers c, jsonb_each_text(to_jsonb(c)) j"),
    P("whole-row", "populate-record", "SELECT json_populate_record(NULL::customers, row_to_json(c)) "
                                      "FROM customers c"),
    P("whole-row", "populate-record-field", "SELECT (json_populate_record(NULL::customers, row_to_json(c))).ssn "
                                            "FROM customers c"),
    P("whole-row", "record-out", "SELECT textin(record_out(c)) FROM customers c"),
    P("whole-row", "row-constructor", "SELECT ROW(c.id, c.ssn) FROM customers c"),
    P("whole-row", "implicit-row", "SELECT (c.id, c.ssn) FROM customers c"),
    P("whole-row", "scalar-subquery-row", "SELECT (SELECT c FROM customers c WHERE id = 1)"),
    P("whole-row", "view-row", "SELECT cv FROM cv"),
    P("whole-row", "renamed-view-row", "SELECT v FROM cv2 v"),
    P("whole-row", "jsonpath", "SELECT jsonb_path_query(to_jsonb(c), '$.ssn') FROM customers c"),
    P("whole-row", "table-to-xml", "SELECT table_to_xml('customers', true, false, '')"),
    P("whole-row", "table-to-xml-schema", "SELECT table_to_xml_and_xmlschema('customers', true, false, '')"),
    P("whole-row", "schema-to-xml", "SELECT schema_to_xml('public', true, false, '')"),
    # -- JSON / XML / array constructors, string functions --------------------------------------------------------
    P("construct", "json-build-object", "SELECT json_build_object('s', ssn) FROM customers"),
    P("construct", "jsonb-build-object", "SELECT jsonb_build_object('s', ssn) FROM customers"),
    P("construct", "json-build-array", "SELECT json_build_array(ssn) FROM customers"),
    P("construct", "jsonb-build-array", "SELECT jsonb_build_array(ssn) FROM customers"),
    P("construct", "json-object", "SELECT json_object(ARRAY['s', ssn]) FROM customers"),
    P("construct", "to-json", "SELECT to_json(ssn) FROM customers"),
    P("construct", "json-agg", "SELECT json_agg(ssn) FROM customers"),
    P("construct", "jsonb-object-agg", "SELECT jsonb_object_agg(id, ssn) FROM customers"),
    P("construct", "xmlelement", "SELECT xmlelement(name s, ssn) FROM customers"),
    P("construct", "xmlattributes", "SELECT xmlelement(name s, xmlattributes(ssn AS v)) FROM customers"),
    P("construct", "xmlforest", "SELECT xmlforest(ssn) FROM customers"),
    P("construct", "xmlagg", "SELECT xmlagg(xmlelement(name s, ssn)) FROM customers"),
    P("construct", "xpath", "SELECT xpath(ssn, '<a/>') FROM customers"),
    P("construct", "array", "SELECT ARRAY[ssn] FROM customers"),
    P("construct", "array-agg", "SELECT array_agg(ssn) FROM customers"),
    P("construct", "array-subquery", "SELECT ARRAY(SELECT ssn FROM customers)"),
    P("construct", "string-agg", "SELECT string_agg(ssn, ',') FROM customers"),
    P("construct", "concat-op", "SELECT ssn || '' FROM customers"),
    P("construct", "concat-op-left", "SELECT '' || ssn FROM customers"),
    P("construct", "concat", "SELECT concat(ssn) FROM customers"),
    P("construct", "concat-ws", "SELECT concat_ws('-', ssn, name) FROM customers"),
    P("construct", "format", "SELECT format('%s', ssn) FROM customers"),
    P("construct", "format-ident", "SELECT format('%I', ssn) FROM customers"),
    P("construct", "quote-literal", "SELECT quote_literal(ssn) FROM customers"),
    P("construct", "reverse", "SELECT reverse(ssn) FROM customers"),
    P("construct", "translate", "SELECT translate(ssn, '0123456789', 'abcdefghij') FROM customers"),
    P("construct", "replace", "SELECT replace(ssn, '-', '') FROM customers"),
    P("construct", "regexp-replace", "SELECT regexp_replace(ssn, '[^0-9]', '', 'g') FROM customers"),
    P("construct", "substr-pieces", "SELECT substr(ssn, 1, 6), substr(ssn, 7) FROM customers"),
    P("construct", "left-right", "SELECT left(ssn, 3) || right(ssn, 8) FROM customers"),
    P("construct", "split-part", "SELECT split_part(ssn, '-', 1), split_part(ssn, '-', 2), split_part(ssn, '-', 3) "
                                 "FROM customers"),
    P("construct", "lpad", "SELECT lpad(ssn, 20, 'x') FROM customers"),
    P("construct", "upper", "SELECT upper(ssn) FROM customers"),
    P("construct", "btrim", "SELECT btrim(ssn, '-') FROM customers"),
    P("construct", "coalesce", "SELECT coalesce(ssn, '') FROM customers"),
    P("construct", "nullif", "SELECT nullif(ssn, '') FROM customers"),
    P("construct", "greatest", "SELECT greatest(ssn, '') FROM customers"),
    P("construct", "collate", "SELECT ssn COLLATE \"C\" FROM customers"),
    P("construct", "min-max", "SELECT min(ssn), max(ssn) FROM customers"),
    P("construct", "mode", "SELECT mode() WITHIN GROUP (ORDER BY ssn) FROM customers"),
    P("construct", "md5", "SELECT md5(ssn) FROM customers"),
    P("construct", "sha256", "SELECT sha256(ssn::bytea) FROM customers"),
    P("construct", "hex", "SELECT encode(ssn::bytea, 'hex') FROM customers"),
    P("construct", "base64", "SELECT encode(convert_to(ssn, 'UTF8'), 'base64') FROM customers"),
    P("construct", "bytea", "SELECT ssn::bytea FROM customers"),
    P("construct", "bits", "SELECT ('x' || encode(ssn::bytea, 'hex'))::bit(88) FROM customers"),
    P("construct", "to-hex-int", "SELECT to_hex(replace(ssn, '-', '')::int) FROM customers"),
    P("construct", "arithmetic", "SELECT replace(ssn, '-', '')::bigint * 2 FROM customers"),
    P("construct", "to-char", "SELECT to_char(replace(ssn, '-', '')::int, '999,999,999') FROM customers"),
    P("construct", "to-tsvector", "SELECT to_tsvector('simple', ssn) FROM customers"),
    P("construct", "quote-ident", "SELECT quote_ident(ssn) FROM customers"),
    P("construct", "ascii-codes", "SELECT string_agg(ascii(substr(ssn, g, 1))::text, ',' ORDER BY g) "
                                  "FROM customers, generate_series(1, 11) g GROUP BY id"),
    P("construct", "char-by-char-hex", "SELECT string_agg(to_hex(ascii(substr(ssn, g, 1))), '' ORDER BY g) "
                                       "FROM customers, generate_series(1, 11) g GROUP BY id"),
    # -- CTEs, subqueries, LATERAL ------------------------------------------------------------------------------
    P("cte", "plain", "WITH x AS (SELECT ssn FROM customers) SELECT * FROM x"),
    P("cte", "materialized-computed", "WITH x AS MATERIALIZED (SELECT ssn AS s FROM customers) "
                                      "SELECT s || '' FROM x"),
    P("cte", "renamed-columns", "WITH x(a) AS (SELECT ssn FROM customers) SELECT a FROM x"),
    P("cte", "renamed-to-unmasked", "WITH a AS (SELECT ssn AS name FROM customers) SELECT name FROM a"),
    P("cte", "renamed-twice", "WITH a AS (SELECT ssn AS id FROM customers), b AS (SELECT id AS email FROM a) "
                              "SELECT email FROM b"),
    P("cte", "whole-row", "WITH x AS (SELECT c FROM customers c) SELECT x FROM x"),
    P("cte", "recursive-chars", "WITH RECURSIVE r(i, s) AS (SELECT 1, '' UNION ALL SELECT i + 1, s || "
                                "substr((SELECT ssn FROM customers WHERE id = 1), i, 1) FROM r WHERE i <= 11) "
                                "SELECT s FROM r ORDER BY i DESC LIMIT 1"),
    P("subquery", "scalar", "SELECT (SELECT ssn FROM customers WHERE id = 1)"),
    P("subquery", "from-renamed", "SELECT name FROM (SELECT ssn AS name FROM customers) t"),
    P("subquery", "from-star", "SELECT * FROM (SELECT ssn AS s FROM customers) t"),
    P("subquery", "scalar-max", "SELECT (SELECT max(ssn) FROM customers) AS x"),
    P("subquery", "lateral", "SELECT l.s FROM customers c, LATERAL (SELECT c.ssn || '' AS s) l"),
    P("subquery", "lateral-upper", "SELECT u.* FROM customers c CROSS JOIN LATERAL (SELECT upper(c.ssn)) u"),
    P("subquery", "lateral-unnest", "SELECT u FROM customers c, LATERAL unnest(ARRAY[c.ssn]) u"),
    P("subquery", "values-subquery", "VALUES ((SELECT ssn FROM customers WHERE id = 2))"),
    P("subquery", "table", "TABLE customers"),
    # -- set-returning functions, windows, grouping sets, set operations -----------------------------------------
    P("srf", "unnest", "SELECT unnest(ARRAY[ssn]) FROM customers"),
    P("srf", "regexp-split", "SELECT regexp_split_to_table(ssn, '-') FROM customers"),
    P("srf", "string-to-table", "SELECT string_to_table(ssn, NULL) FROM customers"),
    P("srf", "regexp-matches", "SELECT regexp_matches(ssn, '[0-9]+', 'g') FROM customers"),
    P("srf", "generate-series-chars", "SELECT substr(ssn, g, 1) FROM customers, generate_series(1, 11) g"),
    P("srf", "generate-series-join", "SELECT string_agg(substr(ssn, g, 1), '' ORDER BY g) "
                                     "FROM customers, generate_series(1, 11) g GROUP BY id"),
    P("srf", "from-function", "SELECT * FROM unnest((SELECT array_agg(ssn) FROM customers))"),
    P("window", "first-value", "SELECT first_value(ssn) OVER () FROM customers"),
    P("window", "last-value", "SELECT last_value(ssn) OVER (ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND "
                              "UNBOUNDED FOLLOWING) FROM customers"),
    P("window", "lag", "SELECT lag(ssn) OVER (ORDER BY id) FROM customers"),
    P("window", "nth-value", "SELECT nth_value(ssn, 2) OVER () FROM customers"),
    P("window", "string-agg", "SELECT string_agg(ssn, ',') OVER () FROM customers"),
    P("grouping", "rollup", "SELECT ssn, count(*) FROM customers GROUP BY ROLLUP (ssn)"),
    P("grouping", "grouping-sets", "SELECT ssn, name, count(*) FROM customers GROUP BY GROUPING SETS ((ssn), (name))"),
    P("grouping", "cube", "SELECT ssn || '', count(*) FROM customers GROUP BY CUBE (ssn)"),
    P("setop", "union", "SELECT ssn FROM customers UNION SELECT 'x'"),
    P("setop", "union-first-constant", "SELECT 'x' UNION ALL SELECT ssn FROM customers"),
    P("setop", "union-all-self", "SELECT ssn FROM customers UNION ALL SELECT ssn FROM customers"),
    P("setop", "intersect", "SELECT ssn FROM customers INTERSECT SELECT ssn FROM customers"),
    P("setop", "except", "SELECT ssn FROM customers EXCEPT SELECT ''"),
    P("setop", "values-union", "VALUES ('x') UNION ALL SELECT ssn FROM customers"),
    # -- views and functions owned by the table's owner ------------------------------------------------------------
    P("view", "star", "SELECT * FROM cv"),
    P("view", "renamed", "SELECT tax_id FROM cv2"),
    P("view", "renamed-computed", "SELECT tax_id || '' FROM cv2"),
    P("view", "computed", "SELECT s FROM cv3"),
    P("view", "matview", "SELECT * FROM cmv"),
    P("view", "to-json", "SELECT to_json(v) FROM cv2 v"),
    P("function", "leak", "SELECT leak()"),
    P("function", "leak-from", "SELECT * FROM leak()"),
    P("function", "leak-one", "SELECT leak_one(1)"),
    P("function", "leak-one-cast", "SELECT leak_one(2)::int"),
    P("dynamic", "query-to-xml", "SELECT query_to_xml('SELECT ssn FROM customers', true, false, '')", why=DYNAMIC),
    P("dynamic", "do-notice", "DO $$BEGIN RAISE NOTICE '%', (SELECT string_agg(ssn, ',') FROM customers); END$$",
      why=DYNAMIC),
    P("dynamic", "temp-function-notice", "CREATE FUNCTION pg_temp.f(t text) RETURNS int LANGUAGE plpgsql AS "
                                         "$$BEGIN RAISE NOTICE 'v=%', t; RETURN 1; END$$",
      "SELECT pg_temp.f(ssn) FROM customers", wrap=True, why=DYNAMIC),
    P("dynamic", "prepare-execute", "PREPARE p AS SELECT ssn || '' FROM customers", "EXECUTE p", why=DYNAMIC),
    # -- copies into relations and session state the session reads back -------------------------------------------
    P("copy-into", "ctas", "CREATE TEMP TABLE t AS SELECT ssn FROM customers", "SELECT * FROM t", wrap=True),
    P("copy-into", "ctas-star", "CREATE TEMP TABLE t AS SELECT * FROM customers", "SELECT * FROM t", wrap=True),
    P("copy-into", "ctas-computed", "CREATE TEMP TABLE t AS SELECT ssn || '' AS x FROM customers",
      "SELECT x FROM t", wrap=True),
    P("copy-into", "ctas-table", "CREATE TEMP TABLE t AS TABLE customers", "SELECT * FROM t", wrap=True),
    P("copy-into", "ctas-whole-row", "CREATE TEMP TABLE t AS SELECT c FROM customers c", "SELECT * FROM t",
      wrap=True),
    P("copy-into", "select-into", "SELECT ssn INTO TEMP t2 FROM customers", "SELECT * FROM t2", wrap=True),
    P("copy-into", "select-into-view", "SELECT * INTO TEMP t2 FROM cv2", "SELECT * FROM t2", wrap=True),
    P("copy-into", "insert-select", "CREATE TEMP TABLE t3(x text)", "INSERT INTO t3 SELECT ssn FROM customers",
      "SELECT * FROM t3", wrap=True),
    P("copy-into", "insert-select-returning", "CREATE TEMP TABLE t3(x text)",
      "INSERT INTO t3 SELECT ssn FROM customers RETURNING x", wrap=True),
    P("copy-into", "update-from-subquery", "CREATE TEMP TABLE t3(x text)", "INSERT INTO t3 VALUES ('a')",
      "UPDATE t3 SET x = (SELECT ssn FROM customers WHERE id = 1)", "SELECT * FROM t3", wrap=True),
    P("copy-into", "update-from-returning", "CREATE TEMP TABLE t3(x text)", "INSERT INTO t3 VALUES ('a')",
      "UPDATE t3 SET x = c.ssn FROM customers c WHERE c.id = 1 RETURNING t3.x", wrap=True),
    P("copy-into", "temp-view", "CREATE TEMP VIEW v AS SELECT ssn FROM customers", "SELECT * FROM v", wrap=True),
    P("copy-into", "view-renamed", "CREATE VIEW v AS SELECT ssn AS x FROM customers", "SELECT * FROM v",
      wrap=True),
    P("copy-into", "matview", "CREATE MATERIALIZED VIEW mv AS SELECT ssn FROM customers", "SELECT * FROM mv",
      wrap=True),
    P("copy-into", "like-table", "CREATE TABLE t4 (LIKE customers)", "INSERT INTO t4 SELECT * FROM customers",
      "SELECT * FROM t4", wrap=True),
    P("copy-into", "same-table-other-column", "INSERT INTO customers SELECT id + 100, ssn, email, 'x' || id "
                                              "FROM customers", "SELECT name FROM customers WHERE id > 100",
      wrap=True),
    P("copy-into", "update-other-column", "UPDATE customers SET name = ssn WHERE id = 1",
      "SELECT name FROM customers WHERE id = 1", wrap=True),
    P("copy-into", "update-other-column-returning", "UPDATE customers SET email = ssn RETURNING email", wrap=True),
    P("copy-into", "generated-column", "ALTER TABLE customers ADD COLUMN x text GENERATED ALWAYS AS (ssn || '') "
                                       "STORED", "SELECT x FROM customers", wrap=True),
    P("copy-into", "rename-column", "ALTER TABLE customers RENAME COLUMN ssn TO tax", "SELECT tax FROM customers",
      wrap=True),
    P("copy-into", "set-config", "SELECT set_config('my.v', ssn, false) FROM customers WHERE id = 1",
      "SHOW my.v", "SELECT current_setting('my.v')"),
    P("copy-into", "application-name", "SELECT set_config('application_name', ssn, false) FROM customers "
                                       "WHERE id = 1", "SHOW application_name"),
    P("copy-into", "sequence", "CREATE TEMP SEQUENCE s", "SELECT setval('s', replace(ssn, '-', '')::bigint) "
                                                         "FROM customers WHERE id = 1", "SELECT last_value FROM s"),
    P("copy-into", "advisory-lock", "SELECT pg_advisory_lock(replace(ssn, '-', '')::bigint) FROM customers "
                                    "WHERE id = 1", "SELECT objid FROM pg_locks WHERE locktype = 'advisory'"),
    P("copy-into", "notify", "LISTEN ch", "SELECT pg_notify('ch', ssn) FROM customers WHERE id = 1"),
    P("copy-into", "statistics", "ANALYZE customers", "SELECT histogram_bounds FROM pg_stats "
                                                      "WHERE tablename = 'customers' AND attname = 'ssn'",
      wrap=True),
    # -- cursors -------------------------------------------------------------------------------------------------
    P("cursor", "computed", "DECLARE cur CURSOR FOR SELECT ssn || '' FROM customers", "FETCH ALL FROM cur",
      wrap=True),
    P("cursor", "plain", "DECLARE cur CURSOR FOR SELECT ssn FROM customers", "FETCH ALL FROM cur", wrap=True),
    P("cursor", "whole-row", "DECLARE cur CURSOR FOR SELECT c FROM customers c", "FETCH ALL FROM cur", wrap=True),
    P("cursor", "binary", "DECLARE cur BINARY CURSOR FOR SELECT ssn || '' FROM customers", "FETCH ALL FROM cur",
      wrap=True),
    P("cursor", "scroll", "DECLARE cur SCROLL CURSOR FOR SELECT ssn || '' FROM customers", "FETCH LAST FROM cur",
      "FETCH PRIOR FROM cur", "MOVE FIRST IN cur", "FETCH NEXT FROM cur", wrap=True),
    P("cursor", "error-at-fetch", "DECLARE cur CURSOR FOR SELECT ssn::int FROM customers", "FETCH 1 FROM cur",
      wrap=True),
    P("cursor", "with-hold", "DECLARE cur CURSOR WITH HOLD FOR SELECT ssn || '' FROM customers",
      "FETCH ALL FROM cur"),
    # -- RETURNING ---------------------------------------------------------------------------------------------------
    P("returning", "update", "UPDATE customers SET name = name WHERE id = 1 RETURNING ssn", wrap=True),
    P("returning", "update-computed", "UPDATE customers SET name = name WHERE id = 1 RETURNING ssn || ''",
      wrap=True),
    P("returning", "update-whole-row", "UPDATE customers SET name = name RETURNING customers", wrap=True),
    P("returning", "delete-star", "DELETE FROM customers WHERE id = 3 RETURNING *", wrap=True),
    P("returning", "delete-json", "DELETE FROM customers WHERE id = 3 RETURNING to_json(customers)", wrap=True),
    P("returning", "insert-subquery", "INSERT INTO customers VALUES (5, 'Eve', 'e@x', '000-00-0000') "
                                      "RETURNING (SELECT ssn FROM customers WHERE id = 1)", wrap=True),
    P("returning", "self-update", "UPDATE customers SET ssn = ssn WHERE id = 1 RETURNING ssn", wrap=True),
    P("returning", "cte", "WITH u AS (UPDATE customers SET name = name RETURNING ssn) SELECT * FROM u", wrap=True),
    P("returning", "on-conflict", "INSERT INTO customers VALUES (1, 'Ann', 'x', 'y') ON CONFLICT (id) "
                                  "DO UPDATE SET name = excluded.name RETURNING ssn", wrap=True),
    # -- COPY out ----------------------------------------------------------------------------------------------------
    P("copy", "query", "COPY (SELECT ssn FROM customers) TO STDOUT"),
    P("copy", "table", "COPY customers TO STDOUT"),
    P("copy", "column", "COPY customers (ssn) TO STDOUT"),
    P("copy", "computed", "COPY (SELECT ssn || '' FROM customers) TO STDOUT"),
    P("copy", "whole-row", "COPY (SELECT c FROM customers c) TO STDOUT"),
    P("copy", "csv", "COPY (SELECT * FROM customers) TO STDOUT WITH (FORMAT csv)"),
    P("copy", "view", "COPY (SELECT * FROM cv2) TO STDOUT"),
    P("copy", "matview", "COPY (SELECT * FROM cmv) TO STDOUT"),
    P("copy", "table-syntax", "COPY (TABLE customers) TO STDOUT"),
    P("copy", "from-temp-copy", "CREATE TEMP TABLE t AS SELECT ssn FROM customers", "COPY t TO STDOUT", wrap=True),
    # -- predicate oracles: the answer must not depend on the hidden digits ---------------------------------------
    P("oracle", "equals", "SELECT id FROM customers WHERE ssn = '536-81-2947'"),
    P("oracle", "like", "SELECT id FROM customers WHERE ssn LIKE '5%'"),
    P("oracle", "substr", "SELECT id FROM customers WHERE substr(ssn, 1, 1) = '5'"),
    P("oracle", "range", "SELECT count(*) FROM customers WHERE ssn < '5'"),
    P("oracle", "regex", "SELECT id FROM customers WHERE ssn ~ '^53'"),
    P("oracle", "position", "SELECT id FROM customers WHERE position('536' in ssn) = 1"),
    P("oracle", "in", "SELECT id FROM customers WHERE ssn IN ('536-81-2947', '401-73-5588')"),
    P("oracle", "case", "SELECT CASE WHEN ssn LIKE '5%' THEN 1 ELSE 0 END FROM customers ORDER BY id"),
    P("oracle", "boolean-output", "SELECT ssn LIKE '5%' FROM customers ORDER BY id"),
    P("oracle", "filter", "SELECT count(*) FILTER (WHERE ssn LIKE '5%') FROM customers"),
    P("oracle", "having", "SELECT id FROM customers GROUP BY id HAVING max(ssn) LIKE '5%'"),
    P("oracle", "join-on", "SELECT c.id FROM customers c JOIN (VALUES ('536-81-2947')) v(s) ON c.ssn = v.s"),
    P("oracle", "exists", "SELECT EXISTS (SELECT 1 FROM customers WHERE ssn LIKE '5%')"),
    P("oracle", "division-by-zero", "SELECT 1 / (CASE WHEN ssn LIKE '5%' THEN 0 ELSE 1 END) FROM customers"),
    P("oracle", "order-by", "SELECT id FROM customers ORDER BY ssn"),
    P("oracle", "order-by-expression", "SELECT id FROM customers ORDER BY substr(ssn, 2)"),
    P("oracle", "distinct-on", "SELECT DISTINCT ON (substr(ssn, 1, 1)) id FROM customers "
                               "ORDER BY substr(ssn, 1, 1), id"),
    P("oracle", "group-by", "SELECT count(*) FROM customers GROUP BY substr(ssn, 1, 1) ORDER BY 1"),
    P("oracle", "window-order", "SELECT id, row_number() OVER (ORDER BY ssn) FROM customers ORDER BY id"),
    P("oracle", "window-partition", "SELECT id, count(*) OVER (PARTITION BY ssn < '5') FROM customers ORDER BY id"),
    P("oracle", "strpos", "SELECT id FROM customers WHERE strpos(ssn, '53') > 0"),
    P("oracle", "view", "SELECT id FROM cv2 WHERE tax_id LIKE '5%'"),
    P("oracle", "json", "SELECT id FROM customers c WHERE to_jsonb(c)->>'ssn' LIKE '5%'"),
    P("oracle", "whole-row-compare", "SELECT id FROM customers c WHERE c::text LIKE '%,5%'"),
    P("oracle", "min-compare", "SELECT min(ssn) < '4' FROM customers"),
    P("oracle", "between", "SELECT id FROM customers WHERE ssn BETWEEN '5' AND '6'"),
    # predicates without a comparison operator in sight, or in places a lineage might not look
    P("oracle", "texteq", "SELECT id FROM customers WHERE texteq(ssn, '536-81-2947')"),
    P("oracle", "text-lt", "SELECT id FROM customers WHERE text_lt(ssn, '5')"),
    P("oracle", "starts-with", "SELECT id FROM customers WHERE starts_with(ssn, '5')"),
    P("oracle", "prefix-operator", "SELECT id FROM customers WHERE ssn ^@ '5'"),
    P("oracle", "regexp-like", "SELECT id FROM customers WHERE regexp_like(ssn, '^5')"),
    P("oracle", "textregexeq", "SELECT id FROM customers WHERE textregexeq(ssn, '^5')"),
    P("oracle", "similar-to", "SELECT id FROM customers WHERE ssn SIMILAR TO '5%'"),
    P("oracle", "any-array", "SELECT id FROM customers WHERE ssn = ANY (ARRAY['536-81-2947'])"),
    P("oracle", "row-compare", "SELECT id FROM customers WHERE (ssn, id) > ('5', 0)"),
    P("oracle", "jsonb-contains", """SELECT id FROM customers c WHERE to_jsonb(c) @> '{"ssn": "536-81-2947"}'"""),
    P("oracle", "tsquery", "SELECT id FROM customers WHERE to_tsvector('simple', ssn) @@ "
                           "plainto_tsquery('simple', '536')"),
    P("oracle", "simple-case", "SELECT CASE ssn WHEN '536-81-2947' THEN 1 ELSE 0 END FROM customers ORDER BY id"),
    P("oracle", "nullif-output", "SELECT nullif(ssn, '536-81-2947') IS NULL FROM customers ORDER BY id"),
    P("oracle", "in-target-list", "SELECT ssn IN ('536-81-2947') FROM customers ORDER BY id"),
    P("oracle", "array-position", "SELECT array_position(ARRAY['536-81-2947'], ssn) FROM customers ORDER BY id"),
    P("oracle", "is-true", "SELECT id FROM customers WHERE (ssn > '5') IS TRUE"),
    P("oracle", "natural-join", "SELECT id FROM customers NATURAL JOIN (VALUES ('536-81-2947')) v(ssn)"),
    P("oracle", "join-using", "SELECT id FROM customers JOIN (VALUES ('536-81-2947')) v(ssn) USING (ssn)"),
    P("oracle", "in-subquery", "SELECT id FROM customers WHERE id IN (SELECT id FROM customers WHERE ssn LIKE '5%')"),
    P("oracle", "lateral-where", "SELECT id FROM customers c, LATERAL (SELECT 1 WHERE c.ssn LIKE '5%') x"),
    P("oracle", "view-subquery", "SELECT id FROM customers WHERE id IN (SELECT id FROM cv2 WHERE tax_id < '5')"),
    P("oracle", "matview", "SELECT id FROM cmv WHERE ssn LIKE '5%'"),
    P("oracle", "field-of-row", "SELECT id FROM customers c WHERE (c).ssn LIKE '5%'"),
    P("oracle", "correlated-rank", "SELECT (SELECT count(*) FROM customers d WHERE d.ssn < c.ssn) FROM customers c "
                                   "ORDER BY id"),
    P("oracle", "copy-where", "COPY (SELECT id FROM customers WHERE ssn LIKE '5%') TO STDOUT"),
    # orderings: the order of rows (each masked, each with its last four) reveals the order of the hidden digits
    P("oracle", "order-by-position", "SELECT id, ssn FROM customers ORDER BY 2"),
    P("oracle", "order-by-output-alias", "SELECT id, ssn AS z FROM customers ORDER BY z"),
    P("oracle", "order-by-shadowing-alias", "SELECT ssn AS id FROM customers ORDER BY id"),
    P("oracle", "order-by-subquery", "SELECT id FROM customers c ORDER BY (SELECT c.ssn)"),
    P("oracle", "order-by-row", "SELECT id FROM customers c ORDER BY ROW(c.ssn, c.id)"),
    P("oracle", "distinct", "SELECT DISTINCT ssn FROM customers"),
    P("oracle", "union-dedup", "SELECT ssn FROM customers UNION SELECT ssn FROM customers"),
    P("oracle", "aggregate-order", "SELECT string_agg(id::text, ',' ORDER BY ssn) FROM customers"),
    P("oracle", "array-agg-order-first", "SELECT (array_agg(id ORDER BY ssn))[1] FROM customers"),
    # how many rows come back (or whether an error does) depends on the value
    P("oracle", "row-count-srf", "SELECT 1 FROM customers, generate_series(1, ascii(ssn) - 47) ORDER BY 1"),
    P("oracle", "row-count-split", "SELECT id FROM customers, unnest(string_to_array(ssn, '5')) ORDER BY id"),
    P("oracle", "offset-subquery", "SELECT id FROM customers ORDER BY id "
                                   "OFFSET (SELECT ascii(ssn) - 52 FROM customers WHERE id = 1)"),
    P("oracle", "limit-subquery", "SELECT id FROM customers ORDER BY id "
                                  "LIMIT (SELECT ascii(ssn) - 52 FROM customers WHERE id = 1)"),
    P("oracle", "division-by-ascii", "SELECT 1 / (ascii(ssn) - 53) FROM customers"),
    P("oracle", "repeat-length", "SELECT length(repeat('x', (ascii(ssn) - 52) * 300000000)) FROM customers"),
    P("oracle", "computed-length", "SELECT length(replace(ssn, '5', '')) FROM customers ORDER BY id"),
    P("oracle", "computed-ascii", "SELECT ascii(ssn) FROM customers ORDER BY id"),
    P("oracle", "computed-position", "SELECT strpos(ssn, '5') FROM customers ORDER BY id"),
    # writes whose counts or effects answer a question about the value
    P("oracle", "update-count", "UPDATE customers SET name = name WHERE ssn LIKE '5%'", wrap=True),
    P("oracle", "delete-count", "DELETE FROM customers WHERE ssn LIKE '4%'", wrap=True),
    P("oracle", "update-case-returning", "UPDATE customers SET name = CASE WHEN ssn LIKE '5%' THEN 'y' ELSE name END "
                                         "RETURNING name", wrap=True),
    P("oracle", "insert-select-where", "INSERT INTO orders SELECT id + 10, id, 0 FROM customers "
                                       "WHERE ssn LIKE '5%'", wrap=True),
    P("oracle", "check-constraint", "ALTER TABLE customers ADD CONSTRAINT k CHECK (ssn NOT LIKE '5%')", wrap=True),
    P("oracle", "explain-analyze", "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "
                                   "SELECT 1 FROM customers WHERE ssn LIKE '5%'"),
    P("oracle", "explain-estimate", "ANALYZE customers", "EXPLAIN SELECT 1 FROM customers WHERE ssn < '5'",
      wrap=True),
]


@dataclass(frozen=True)
class ExtProbe:
    """A probe over the extended protocol with psycopg."""

    id: str
    sql: str
    params: tuple[Any, ...] | None = None
    mode: str = "binary"  # text | binary | prepared | prepared-binary | named | named-binary | copy | pipeline
    why: str = WHY

    @property
    def parallel(self) -> bool:
        return self.mode != "binary-rollback"


EXT_PROBES = [
    ExtProbe("plain", "SELECT ssn FROM customers ORDER BY id"),
    ExtProbe("computed", "SELECT ssn || '' FROM customers"),
    ExtProbe("computed-text", "SELECT ssn || '' FROM customers", mode="text"),
    ExtProbe("whole-row", "SELECT c FROM customers c"),
    ExtProbe("whole-row-text", "SELECT c FROM customers c", mode="text"),
    ExtProbe("jsonb", "SELECT to_jsonb(c) FROM customers c"),
    ExtProbe("array", "SELECT array_agg(ssn) FROM customers"),
    ExtProbe("bytea", "SELECT ssn::bytea FROM customers"),
    ExtProbe("convert-to", "SELECT convert_to(ssn, 'UTF8') FROM customers"),
    ExtProbe("int4", "SELECT replace(ssn, '-', '')::int FROM customers"),
    ExtProbe("int8", "SELECT replace(ssn, '-', '')::bigint FROM customers"),
    ExtProbe("numeric", "SELECT replace(ssn, '-', '')::numeric FROM customers"),
    ExtProbe("float8", "SELECT replace(ssn, '-', '')::float8 FROM customers"),
    ExtProbe("cast-error", "SELECT ssn::int FROM customers"),
    ExtProbe("cast-error-param", "SELECT ssn::int FROM customers WHERE id = %s", (1,)),
    ExtProbe("param-concat", "SELECT %s::text || ssn FROM customers", ("x",)),
    ExtProbe("oracle-param", "SELECT id FROM customers WHERE ssn = %s", ("536-81-2947",)),
    ExtProbe("oracle-param-like", "SELECT count(*) FROM customers WHERE ssn LIKE %s", ("5%",)),
    ExtProbe("prepared-computed", "SELECT ssn || '' FROM customers", mode="prepared"),
    ExtProbe("prepared-binary-row", "SELECT c FROM customers c", mode="prepared-binary"),
    ExtProbe("prepared-cast-error", "SELECT ssn::int FROM customers", mode="prepared"),
    ExtProbe("named-cursor", "SELECT ssn || '' FROM customers", mode="named"),
    ExtProbe("named-cursor-binary", "SELECT ssn FROM customers", mode="named-binary"),
    ExtProbe("copy", "COPY (SELECT ssn FROM customers) TO STDOUT", mode="copy"),
    ExtProbe("copy-binary", "COPY (SELECT ssn || '' FROM customers) TO STDOUT WITH (FORMAT binary)", mode="copy"),
    ExtProbe("pipeline", "SELECT ssn || '' FROM customers", mode="pipeline"),
    ExtProbe("returning-binary", "UPDATE customers SET name = name WHERE id = 1 RETURNING ssn, customers",
             mode="binary-rollback"),
    ExtProbe("not-null-detail", "UPDATE customers SET name = NULL WHERE id = %s", (1,), mode="binary-rollback"),
]


def diag_fields(d: Any) -> dict[str, str]:
    names = ("severity", "sqlstate", "message_primary", "message_detail", "message_hint", "statement_position",
             "internal_position", "internal_query", "context", "schema_name", "table_name", "column_name",
             "datatype_name", "constraint_name")
    return {n: str(v) for n in names if (v := getattr(d, n, None)) is not None}


def render(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return "b:" + bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, Decimal):
        return f"{value}"
    return repr(value)


def run_psycopg(host: str, probe: ExtProbe, *, port: int | None = None, db: str = "app") -> list[str]:
    """What psycopg gives the caller for ``probe``: rows, errors (every diagnostic field) and notices."""
    import psycopg

    out: list[str] = []
    kw: dict[str, Any] = {"host": host, "user": "app", "dbname": db, "autocommit": True, "connect_timeout": 10}
    if port is not None:
        kw |= {"port": port, "password": APP_PASSWORD}
    try:
        conn = psycopg.connect(**kw)
    except psycopg.Error as e:
        return [f"connect: {type(e).__name__}: {e}"]
    with conn:
        conn.add_notice_handler(lambda d: out.append(f"notice {diag_fields(d)}"))

        def rows(cur: Any) -> None:
            if cur.description is not None:
                out.append("rows " + " ; ".join(", ".join(render(v) for v in r) for r in cur.fetchall()))
            out.append(f"status {cur.statusmessage}")

        try:
            binary = probe.mode.endswith("binary") or probe.mode in ("binary", "binary-rollback")
            if probe.mode in ("text", "binary"):
                cur = conn.cursor(binary=binary)
                cur.execute(probe.sql, probe.params, prepare=False)
                rows(cur)
            elif probe.mode == "binary-rollback":
                with contextlib.suppress(_Rollback), conn.transaction():
                    cur = conn.cursor(binary=True)
                    cur.execute(probe.sql, probe.params)
                    rows(cur)
                    raise _Rollback
            elif probe.mode.startswith("prepared"):
                for _ in range(2):  # the second execution binds the statement prepared by the first
                    cur = conn.cursor(binary=binary)
                    try:
                        cur.execute(probe.sql, probe.params, prepare=True)
                        rows(cur)
                    except psycopg.Error as e:
                        out.append(f"error {type(e).__name__} {diag_fields(e.diag)}")
            elif probe.mode.startswith("named"):
                with conn.transaction():
                    cur = conn.cursor(name="probe_cursor", binary=binary)
                    cur.execute(probe.sql, probe.params)
                    rows(cur)
            elif probe.mode == "copy":
                cur = conn.cursor()
                with cur.copy(probe.sql) as copy:
                    out.append("copy " + b"".join(bytes(b) for b in copy).decode("utf-8", "backslashreplace"))
            elif probe.mode == "pipeline":
                with conn.pipeline():
                    curs = [conn.cursor(binary=True) for _ in range(3)]
                    curs[0].execute("SELECT 1")
                    curs[1].execute(probe.sql, probe.params)
                    curs[2].execute("SELECT 2")
                for cur in curs:
                    rows(cur)
            else:
                raise ValueError(probe.mode)
        except psycopg.Error as e:
            out.append(f"error {type(e).__name__} {diag_fields(e.diag)}")
    return out


class _Rollback(Exception):
    pass


def sensitive(real: list[str], twin: list[str], real_text: str) -> bool:
    """The probe reveals something of the hidden digits without the bastion: its output on the real and the twin
    database differ, or the real output holds a clear value outright."""
    return normalise("\n".join(real)) != normalise("\n".join(twin)) or bool(leaks_in(real_text))


@contextlib.contextmanager
def proxy_with_tap(pg: PgServer, base: Path, policy: PolicySet, *, database: str = "app",
                   masking: list[MaskRule] | None = None, approval: str = "denied") -> Iterator[tuple[ProxyThread,
                                                                                                      WireTap]]:
    p = ProxyThread(pg, base / "proxy", policy, database=database, masking=masking, approval=approval)
    tap = WireTap(p.proxy.socket_path, base / "tap")
    try:
        yield p, tap
    finally:
        tap.close()
        p.close()


def wait_until(pred: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def env_for_tap(tap: WireTap) -> dict[str, str]:
    return psql_env(str(tap.dir))
