"""The demo's ``demo-db``: a local PostgreSQL in the demo state dir (initdb once, started with the demo).

Only used by ``bastion demo``. Needs the PostgreSQL server binaries (Debian: package ``postgresql``); when they are
missing the demo runs without ``demo-db`` and says so.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bastion.demo.lifeline import die_with_demo

SEED = """
CREATE TABLE customers(id int PRIMARY KEY, name text NOT NULL, email text, ssn text);
INSERT INTO customers VALUES
  (1, 'Ada Lovelace', 'ada@example.com', '123-45-6789'),
  (2, 'Alan Turing', 'alan@example.com', '987-65-4321'),
  (3, 'Grace Hopper', 'grace@example.com', '555-12-3456'),
  (4, 'Edsger Dijkstra', 'edsger@example.com', '222-33-4444');
"""


def pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class DemoPostgres:
    """Create (first run) and run the demo database server under ``state/pg``."""

    def __init__(self, state: Path, port: int):
        self.base = state / "pg"
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.password_file = state / "secrets" / "demo-db.pw"
        self._root = os.geteuid() == 0
        self._run_as = ["runuser", "-u", "postgres", "--"] if self._root else []

    @staticmethod
    def available() -> bool:
        return pg_bin("initdb") is not None and pg_bin("postgres") is not None and shutil.which("psql") is not None

    def _admin_psql(self, sql: str, db: str = "postgres") -> None:
        env = {"PATH": "/usr/bin:/bin", "PGPASSWORD": (self.base / "superuser.pw").read_text().strip()}
        subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
                        "-U", "postgres", "-d", db, "-c", sql], check=True, env=env, capture_output=True)

    def start(self, record: Callable[[str, int, int], None] | None = None) -> None:
        """Create the cluster on the first run, start the server, wait until it answers and seed it if no run has
        yet; ``record(name, pid, stop signal)`` is told the server's process as soon as it exists."""
        first = not (self.base / "data" / "PG_VERSION").exists()
        if first:
            (self.base).mkdir(parents=True, exist_ok=True, mode=0o700)
            (self.base / "superuser.pw").write_text(secrets.token_urlsafe(24) + "\n")
            os.chmod(self.base / "superuser.pw", 0o600)
            if self._root:  # initdb refuses root: the server runs as the postgres user
                os.chmod(self.base.parent, 0o711)  # noqa: S103 - traverse only; keys/ and secrets/ stay 0700
                subprocess.run(["chown", "-R", "postgres", str(self.base)], check=True)
                if subprocess.run([*self._run_as, "test", "-x", str(self.base)]).returncode != 0:
                    shutil.rmtree(self.base, ignore_errors=True)
                    raise RuntimeError(f"the postgres user cannot reach {self.base}: choose a --state-dir whose "
                                       "parent directories others may traverse")
            subprocess.run([*self._run_as, pg_bin("initdb") or "initdb", "-D", str(self.base / "data"), "-U",
                            "postgres", "--auth=scram-sha-256", f"--pwfile={self.base / 'superuser.pw'}", "-E",
                            "UTF8", "--locale=C.UTF-8"], check=True, capture_output=True)
        (self.base / "sock").mkdir(exist_ok=True)
        if self._root:
            subprocess.run(["chown", "postgres", str(self.base / "sock")], check=True)
        proc = self.proc = self._spawn(record)
        deadline = time.monotonic() + 30
        while subprocess.run([pg_bin("pg_isready") or "pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                             capture_output=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the demo database did not start; see {self.base / 'server.log'}")
            time.sleep(0.2)
        if not self.password_file.exists():
            self._seed()

    def _seed(self) -> None:
        """The demo's role, database and table; the password file, written last, says it is done. A first run
        stopped before that (Ctrl-C, a closed terminal) leaves a cluster without them: the next run seeds it again
        from the start (a half-made ``demo`` database is dropped), instead of starting without demo-db's password."""
        self.password_file.parent.mkdir(mode=0o700, exist_ok=True)
        password = secrets.token_urlsafe(24)
        self._admin_psql("DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'demo_app') THEN "
                         "CREATE ROLE demo_app LOGIN; END IF; END$$")
        self._admin_psql(f"ALTER ROLE demo_app PASSWORD '{password}'")
        self._admin_psql("DROP DATABASE IF EXISTS demo")
        self._admin_psql("CREATE DATABASE demo OWNER demo_app")
        self._admin_psql(SEED + "ALTER TABLE customers OWNER TO demo_app;", db="demo")
        tmp = self.password_file.with_name(self.password_file.name + ".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        tmp.replace(self.password_file)

    def _spawn(self, record: Callable[[str, int, int], None] | None) -> subprocess.Popen[bytes]:
        """The server, a direct child of the demo (no runuser in between: a parent-death signal reaches it), in a
        session of its own (a Ctrl-C at the terminal is the demo's to handle), with a fast shutdown (SIGINT) when
        the demo dies."""
        user: dict[str, Any] = {}
        if self._root:
            pw = pwd.getpwnam("postgres")
            user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": os.getgrouplist("postgres", pw.pw_gid)}
        with open(self.base / "server.log", "ab") as log:
            proc = subprocess.Popen(
                [pg_bin("postgres") or "postgres", "-D", str(self.base / "data"), "-p", str(self.port), "-k",
                 str(self.base / "sock"), "-c", "listen_addresses=127.0.0.1"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, cwd=self.base,
                start_new_session=True, preexec_fn=die_with_demo(signal.SIGINT), **user)  # noqa: PLW1509
        if record is not None:
            record("postgres", proc.pid, signal.SIGINT)
        return proc

    def stop(self) -> None:
        """A fast shutdown (clients disconnected, a clean checkpoint); SIGKILL if it takes longer than 15 s."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
