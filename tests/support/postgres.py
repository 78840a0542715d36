"""A throwaway PostgreSQL server for tests: initdb into a temp dir with SCRAM auth, on a loopback port."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from bastion.demo.devcerts import ServerCert, make_server_cert
from tests.support.keys import free_port


def pg_bin(name: str) -> str:
    """A PostgreSQL server binary (Debian keeps them out of PATH)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: install postgresql (scripts/setup --test does)")
    return path


@dataclass
class PgServer:
    dir: Path
    port: int
    superuser: str
    password: str
    proc: subprocess.Popen[bytes]
    tls: ServerCert | None = None

    def psql(self, sql: str, db: str = "postgres") -> str:
        """Run SQL as the superuser over TCP with the password (the test's own direct path)."""
        env = {**os.environ, "PGPASSWORD": self.password}
        out = subprocess.run(["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
                              str(self.port), "-U", self.superuser, "-d", db, "-c", sql], capture_output=True,
                             text=True, env=env, timeout=30)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        return out.stdout

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_postgres(password: str = "s3cret-Upstream-Pw", tls: bool = False) -> PgServer:
    """initdb (SCRAM-SHA-256 for every connection) and start postgres as the ``postgres`` OS user; with ``tls``,
    TLS on with a certificate for 127.0.0.1 from a new CA (``server.tls.ca`` is what clients trust)."""
    as_user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    base = Path(tempfile.mkdtemp(prefix="bastion-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    pwfile = base / "pw"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", as_user, str(base)], check=True)
    run_as = ["runuser", "-u", as_user, "--"] if os.geteuid() == 0 else []
    subprocess.run([*run_as, pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
                    f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8"], check=True, capture_output=True)
    pwfile.unlink()
    ssl_opts: list[str] = []
    certs = None
    if tls:
        certs = make_server_cert(base / "tls")
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", as_user, str(base / "tls")], check=True)
        ssl_opts = ["-c", "ssl=on", "-c", f"ssl_cert_file={certs.cert}", "-c", f"ssl_key_file={certs.key}"]
    port = free_port()
    with open(base / "log", "wb") as log:
        proc = subprocess.Popen([*run_as, pg_bin("postgres"), "-D", str(data), "-p", str(port), "-k", str(sock),
                                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", *ssl_opts],
                                stdout=subprocess.DEVNULL, stderr=log)
    server = PgServer(base, port, "postgres", password, proc, certs)
    deadline = time.monotonic() + 30
    while True:
        ready = subprocess.run([pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True)
        if ready.returncode == 0:
            return server
        if proc.poll() is not None or time.monotonic() > deadline:
            log = (base / "log").read_text()
            server.stop()
            raise RuntimeError(f"postgres did not start: {log}")
        time.sleep(0.2)


ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A new, empty database on the machine's PostgreSQL (127.0.0.1:5432), dropped afterwards: the store URL.

    A clear failure, not a skip, when the server is not there: the machines these tests run on are meant to have
    it (scripts/setup installs it)."""
    from sqlalchemy import create_engine, text

    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as e:
        admin.dispose()
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is needed for this test: {e}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
