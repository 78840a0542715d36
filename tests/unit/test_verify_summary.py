"""`bastion audit verify` ends with a sentence: "checked 5 recordings and 53 audit events", singular where one
(issue 24: it said "checked 5 recordings, 53 audit")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bastion.cli.audit import checked_summary
from bastion.store.db import Store
from recorder.asciicast import CastWriter

ROOT = Path(__file__).resolve().parents[2]


def test_counts_in_words() -> None:
    assert checked_summary({"recordings": 5, "audit": 53}) == "5 recordings and 53 audit events"
    assert checked_summary({"recordings": 1, "audit": 1}) == "1 recording and 1 audit event"
    assert checked_summary({"recordings": 0, "audit": 2}) == "0 recordings and 2 audit events"
    assert checked_summary({"recordings": 1}) == "1 recording"
    assert checked_summary({}) == "nothing"


def verify(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion.cli", "--config", str(tmp_path / "bastion.yaml"), "audit",
                           "verify"], capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_the_cli_says_it(tmp_path: Path) -> None:
    (tmp_path / "bastion.yaml").write_text(f"""\
listen: {{host: 127.0.0.1, port: 2222}}
host_keys: [host_key]
database: sqlite:///{tmp_path / 'b.db'}
recordings_dir: {tmp_path / 'rec'}
""")
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    store.migrate()
    out = verify(tmp_path)
    assert out.returncode == 0 and out.stdout.splitlines()[-1] == "OK: checked 0 recordings and 0 audit events"
    p = tmp_path / "one.cast"
    w = CastWriter(p, 80, 24, title="t")
    w.output(b"hi\r\n")
    sha = w.close()
    sid = "20261201-000001-aaaaaaaaaaaa"
    store.start_session(sid, user="alice", resource="web", kind="ssh", mode="exec", command=None, client_addr="",
                        node="n1", recording_path=p)
    store.end_session(sid, outcome="exited", exit_status=0, message="", sha256=sha, size=p.stat().st_size)
    store.audit("alice", "session.start", "ok", session=sid)
    out = verify(tmp_path)
    assert out.returncode == 0 and out.stdout.splitlines()[-1] == "OK: checked 1 recording and 1 audit event", \
        out.stdout + out.stderr
    store.audit("alice", "session.end", "ok", session=sid)
    p.write_bytes(p.read_bytes().replace(b"hi", b"ho"))  # one problem
    out = verify(tmp_path)
    assert out.returncode == 1
    assert out.stdout.splitlines()[-1] == "FAILED (1 problem): checked 1 recording and 2 audit events"
