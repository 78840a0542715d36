"""Issue 24: ``\\q`` in the demo's restricted psql (demo-db) ends the session, as Ctrl-D does, instead of "backslash
commands are restricted". Driven as a person would: ``bastion demo``, the stock ``ssh`` client in a tmux pane,
keys typed with ``send-keys``, the screen read with ``capture-pane``; every wait is on what the screen shows, with a
deadline."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import BastionEnv, start_bastion, stop_bastion, write_config
from tests.support.keys import free_port, free_port_block
from tests.support.postgres import start_postgres
from tests.support.ssh_client import ssh_argv

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not shutil.which("tmux"), reason="no tmux")]
PROMPT = r"^demo=> *\Z"  # psql's main prompt on the last line of the screen, the cursor after it
OPEN_PASSWORD = "open-Pw-Never-Shown-7"
OUTCOME = r"demo-db: psql exited with status 0 after \d+s · recorded as (\S+)"


class Pane:
    """One tmux pane on a private tmux server (its socket in ``workdir``) running ``argv`` under ``sh``, which
    writes the program's exit status on the screen when it ends (tmux started from a test may not notice a pane's
    program exit for a long time: the zombie waits for a SIGCHLD it handles late)."""

    def __init__(self, workdir: Path, name: str, argv: list[str]):
        conf = workdir / "tmux.conf"
        conf.write_text("set -g remain-on-exit on\nset -g history-limit 2000\n")
        self.base = ["tmux", "-S", str(workdir / f"{name}.sock"), "-f", str(conf)]
        self.target = f"pq-{name}"
        self.tmux("new-session", "-d", "-s", self.target, "-x", "140", "-y", "40", "--", "sh", "-c",
                  '"$@"; echo "[exit status $?]"', "sh", *argv)

    def tmux(self, *args: str) -> str:
        return subprocess.run([*self.base, *args], capture_output=True, text=True, check=True, timeout=30).stdout

    def screen(self) -> str:
        lines = [line.rstrip() for line in self.tmux("capture-pane", "-p", "-t", self.target).splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        return "\n".join(lines)

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """Wait until ``pattern`` (re.M) matches the screen; AssertionError with the screen if it does not."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            m = rx.search(text)
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not on the screen after {timeout}s:\n{text}")
            time.sleep(0.1)

    def type(self, line: str) -> None:
        """Type ``line`` and Enter (a trailing ``;`` would end tmux's command: it is escaped)."""
        text = line[:-1] + "\\;" if line.endswith(";") else line
        if text:
            self.tmux("send-keys", "-t", self.target, "-l", "--", text)
        self.tmux("send-keys", "-t", self.target, "Enter")

    def dead(self) -> int | None:
        """The program's exit status once it ended, else None."""
        m = re.search(r"^\[exit status (\d+)\]$", self.screen(), re.M)
        return int(m.group(1)) if m else None

    def wait_exit(self, log: Path, timeout: float = 90) -> int:
        """Wait for the program to end; its status. If it does not, the failure shows the daemon's ``log`` and
        the psql processes."""
        deadline = time.monotonic() + timeout
        while (status := self.dead()) is None:
            if time.monotonic() > deadline:
                ps = subprocess.run(["ps", "-eo", "pid,ppid,stat,wchan:24,etime,args", "--forest"],
                                    capture_output=True, text=True).stdout
                raise AssertionError(f"still running after {timeout}s:\n{self.screen()}\n-- the daemon's log:\n"
                                     f"{log.read_text(errors='replace')[-4000:]}\n-- psql processes:\n"
                                     + "\n".join(line for line in ps.splitlines() if "psql" in line))
            time.sleep(0.1)
        return status

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    # directly under /tmp: as root the demo's PostgreSQL runs as `postgres` and must reach the state dir
    state, port = Path(tempfile.mkdtemp(prefix="bastion-pq-", dir="/tmp")), free_port_block(4)
    # its output goes to a file, read for the banner: no pipe left for nobody to drain
    log = tmp_path_factory.mktemp("pq-demo") / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bastion.cli", "demo", "--port", str(port), "--state-dir",
                                 str(state)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    try:
        while "Ctrl-C stops the demo" not in (banner := log.read_text(errors="replace")):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"demo did not start:\n{banner}")
            time.sleep(0.2)
        if "demo-db is not available" in banner:
            pytest.skip("the demo has no database here (no PostgreSQL server binaries)")
        yield state, port
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def alice(demo: tuple[Path, int], tmp_path: Path) -> Iterator[Pane]:
    """alice's menu over ``ssh``, in a tmux pane."""
    state, port = demo
    pane = Pane(tmp_path, "menu", ssh_argv(state / "keys" / "alice", port, "alice", tty=True))
    try:
        pane.wait_for(r"Enter to open", 60)
        yield pane
    finally:
        pane.close()


def open_demo_db(pane: Pane) -> None:
    """From the menu: demo-db (the first row) until psql's prompt."""
    pane.wait_for(r"^ demo-db\s+postgres")
    pane.tmux("send-keys", "-t", pane.target, "Enter")
    pane.wait_for(PROMPT, 60)


def back_at_the_menu(pane: Pane, seen: set[str]) -> str:
    """Wait for the menu's outcome line of a session not seen before; its recording id."""
    deadline = time.monotonic() + 90
    while True:
        ids = set(re.findall(OUTCOME, pane.wait_for(OUTCOME, max(1.0, deadline - time.monotonic())).string))
        if ids - seen:
            pane.wait_for(r"^ demo-db\s+postgres")  # the menu's list
            (new,) = ids - seen
            seen.add(new)
            return new
        if time.monotonic() > deadline:
            raise AssertionError(f"no new outcome line (seen {seen}):\n{pane.screen()}")
        time.sleep(0.1)


def recording(state: Path, sid: str) -> tuple[str, list[str]]:
    """What psql showed in session ``sid`` and the recording's markers."""
    listed = subprocess.run([sys.executable, "-m", "bastion.cli", "--config", str(state / "bastion.yaml"),
                             "sessions", "list", "--json"], capture_output=True, text=True, timeout=60, check=True)
    row = next(r for r in json.loads(listed.stdout) if r["id"] == sid)
    events = [json.loads(line) for line in Path(row["recording"]).read_text().splitlines()[1:]]
    return "".join(e[2] for e in events if e[1] == "o"), [e[2] for e in events if e[1] == "m"]


@pytest.mark.parametrize("forms", [["\\q", "\\quit", "\\q   "], ["exit", "quit", "QUIT ;"]])
def test_quit_forms_return_to_the_menu(demo: tuple[Path, int], alice: Pane, forms: list[str]) -> None:
    """Each form ends psql with status 0 and the menu shows the usual outcome line; psql never answers that
    backslash commands are restricted."""
    state, _ = demo
    seen: set[str] = set()
    for form in forms:
        open_demo_db(alice)
        alice.type(form)
        sid = back_at_the_menu(alice, seen)
        shown, markers = recording(state, sid)
        assert "restricted" not in shown, (form, shown)
        assert "\n\\q\r\n" in shown, (form, shown)  # psql's own words at the end of its input
        assert any("ends the session" in m for m in markers), (form, markers)


def test_q_in_a_string_is_text_and_in_a_statement_ends_it(demo: tuple[Path, int], alice: Pane) -> None:
    """Inside a quoted string ``\\q`` is text (psql: "Use control-D to quit."), and the string keeps it; inside
    an unfinished statement ``\\q`` ends psql, dropping the statement, as psql itself does with ``\\q``."""
    open_demo_db(alice)
    alice.type("SELECT 'before")
    alice.wait_for(r"^demo'> *\Z")
    alice.type("\\q")
    alice.wait_for(r"^Use control-D to quit\.\ndemo'> *\Z")
    alice.type("after' AS x;")
    alice.wait_for(r"^ before *\+\n \\q *\+\n after\n\(1 row\)\n\ndemo=> *\Z")
    alice.type("SELECT 1")
    alice.wait_for(r"^demo-> *\Z")
    alice.type("\\q")
    back_at_the_menu(alice, set())


@pytest.mark.parametrize("how", ["user+target", "command"])
def test_straight_to_demo_db_the_connection_ends(demo: tuple[Path, int], tmp_path: Path, how: str) -> None:
    """``ssh -t alice+demo-db@bastion`` (or ``ssh -t alice@bastion demo-db``): ``\\q`` ends the connection, status 0."""
    state, port = demo
    argv = (ssh_argv(state / "keys" / "alice", port, "alice+demo-db", tty=True) if how == "user+target" else
            ssh_argv(state / "keys" / "alice", port, "alice", "demo-db", tty=True))
    pane = Pane(tmp_path, "direct", argv)
    try:
        pane.wait_for(PROMPT, 60)
        pane.type("\\q")
        assert pane.wait_exit(state / "logs" / "bastion.log") == 0
        pane.wait_for(r"^demo=>\n\\q$")  # the line given up, then psql's own words at the end of its input
        assert "restricted" not in pane.screen()
    finally:
        pane.close()


@pytest.fixture(scope="module")
def open_db(bastion_env: BastionEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BastionEnv, int,
                                                                                                Path]]:
    """A daemon with an unrestricted interactive psql (its meta-commands read by the line filter of policies.psql)
    on a PostgreSQL of its own."""
    server = start_postgres()
    try:
        server.psql(f"CREATE USER app PASSWORD '{OPEN_PASSWORD}'")
        server.psql("CREATE DATABASE app OWNER app")
        d = tmp_path_factory.mktemp("pq-open")
        (d / "state").mkdir()
        (d / "db.pw").write_text(OPEN_PASSWORD + "\n")
        port = free_port()
        cfg = write_config(d, port, bastion_env.keys, bastion_env.target, bastion_env.target_key,
                           extra_resources=f"""\
  web-open-db:
    kind: postgres
    description: interactive psql without restrict (sandboxed)
    host: 127.0.0.1
    port: {server.port}
    database: app
    user: app
    credential: {{password_file: {d / 'db.pw'}}}
    tls: {{mode: disable}}
    policy: pq-db
""", extra_policies="  pq-db: {default: allow}\n")
        proc = start_bastion(cfg, port, d / "out.log")
        try:
            yield bastion_env, port, d / "out.log"
        finally:
            stop_bastion(proc)
    finally:
        server.stop()


@pytest.mark.parametrize("before", [[], ["SELECT 1"]])
def test_unrestricted_psql_quits_by_itself(open_db: tuple[BastionEnv, int, Path], tmp_path: Path,
                                           before: list[str]) -> None:
    """Without restrict the line filter lets ``\\q`` through and psql quits on its own, at the main prompt and
    inside an unfinished statement."""
    env, port, log = open_db
    pane = Pane(tmp_path, "open", ssh_argv(env.keys["alice"], port, "alice", "web-open-db", tty=True))
    try:
        pane.wait_for(r"^app=> *\Z", 60)
        for line in before:
            pane.type(line)
            pane.wait_for(r"^app-> *\Z")
        pane.type("\\q")
        assert pane.wait_exit(log) == 0
        pane.wait_for(r"^app[=-]> \\q$")  # psql read the line itself
        assert "bastion:" not in pane.screen()
    finally:
        pane.close()
