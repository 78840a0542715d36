"""``log_format: json``: every line a daemon writes is one JSON object, control characters included (issue 25)."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bastion.metrics.logs import JsonFormatter, bind, set_process
from tests.support.keys import free_port

HOSTILE = "a\x1b[31mred\x07\x00\x7f\x9b\u2028b\udcff\nnext"


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("bastion.test", logging.WARNING, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_one_object_per_line_with_no_raw_control_character() -> None:
    line = JsonFormatter().format(record("%s: said %s", "mallory@10.0.0.9:4242", HOSTILE, resource="web"))
    assert not any(ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f or c in "\u2028\u2029" for c in line), repr(line)
    assert all(not 0xD800 <= ord(c) <= 0xDFFF for c in line)
    obj = json.loads(line)
    assert obj["message"].startswith("mallory@10.0.0.9:4242: said a\x1b[31mred\x07\x00\x7f\x9b\u2028b")
    assert obj["user"] == "mallory" and obj["client"] == "10.0.0.9:4242" and obj["resource"] == "web"
    assert obj["level"] == "warning" and obj["logger"] == "bastion.test" and obj["time"].endswith("Z")


def test_process_and_task_fields_and_tracebacks() -> None:
    set_process(node="node-a", worker="connection", connection="4242")
    token = bind(user="alice", resource="db")
    try:
        try:
            raise ValueError("boom\x1b")
        except ValueError:
            rec = record("failed")
            rec.exc_info = sys.exc_info()
        obj = json.loads(JsonFormatter().format(rec))
    finally:
        set_process(worker="daemon", connection="")
        from bastion.metrics.logs import _bound

        _bound.reset(token)
    assert (obj["node"], obj["worker"], obj["connection"], obj["user"], obj["resource"]) == (
        "node-a", "connection", "4242", "alice", "db")
    assert "ValueError: boom\x1b" in obj["exception"]


@pytest.mark.timeout(120)
def test_a_json_daemon_writes_only_json(tmp_path: Path) -> None:
    """A real daemon (a process per connection) starts, refuses a reload whose config names a key with an escape
    sequence in it (the problem is logged with that key), and stops: every line of its stderr is a JSON object."""
    (tmp_path / "state").mkdir()
    port = free_port()
    cfg = tmp_path / "bastion.yaml"
    good = (f"listen: {{host: 127.0.0.1, port: {port}}}\nhost_keys: [state/host_ed25519]\n"
            "database: sqlite:///state/bastion.db\nrecordings_dir: state/recordings\nlog_format: json\n")
    cfg.write_text(good)
    err = tmp_path / "stderr"
    with open(err, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bastion.cli", "serve", "--config", str(cfg)],
                                stdout=out, stderr=out, start_new_session=True)
    try:
        wait_line(err, "listening on", proc)
        cfg.write_text(good + '"bad\\e[31mkey": 1\n')
        proc.send_signal(signal.SIGHUP)
        wait_line(err, "reload refused", proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    lines = err.read_text(errors="surrogateescape").splitlines()
    objs = [json.loads(ln) for ln in lines]  # every line parses
    refused = [o for o in objs if "reload refused" in o["message"]]
    assert refused and "bad\x1b[31mkey: unknown key" in refused[0]["message"]
    assert "\x1b" not in err.read_text()  # escaped on the way out, never raw
    assert {o["worker"] for o in objs} >= {"supervisor"} and all(o["node"] for o in objs)


def wait_line(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        assert proc.poll() is None, path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged within {timeout} s:\n{path.read_text()}")


def test_what_python_prints_itself_is_json_too() -> None:
    """A thread's uncaught exception, a warning, an exception Python cannot raise and one that ends the program:
    each becomes one JSON line instead of a raw traceback."""
    code = """
import gc, threading, warnings
from bastion.cli.common import setup_logging
from bastion.metrics.logs import use_format
setup_logging(False, None, "json")
use_format("json")
t = threading.Thread(target=lambda: 1 / 0, name="worker-\\x1b")
t.start(); t.join()
warnings.warn("careful\\x07")
class Bad:
    def __del__(self):
        raise RuntimeError("in __del__")
Bad(); gc.collect()
raise KeyError("the end")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    objs = [json.loads(ln) for ln in out.stderr.splitlines()]
    messages = " | ".join(o["message"] for o in objs)
    assert "uncaught exception in thread worker-\x1b" in messages and "careful\x07" in messages
    assert "in __del__" in " ".join(o.get("exception", "") for o in objs)
    assert objs[-1]["message"] == "uncaught exception" and "KeyError: 'the end'" in objs[-1]["exception"]
    assert "\x1b" not in out.stderr and "\x07" not in out.stderr


def test_text_python_writes_to_stderr_itself_is_json_too() -> None:
    """The interpreter writes some lines to ``sys.stderr`` as text (the header of a failed write to the signal
    wakeup fd, which a signal can provoke while asyncio closes its loop; a library's print): each is one JSON line,
    pieces written without a newline are joined first, and an ignored exception with no object reads cleanly."""
    code = """
import _testcapi, sys
from bastion.cli.common import setup_logging
from bastion.metrics.logs import use_format
setup_logging(False, None, "json")
use_format("json")
sys.stderr.write("Exception ignored when trying to write to the signal wakeup fd:\\n")
print("half", end="", file=sys.stderr); print(" and\\x1b the rest", file=sys.stderr)
try:
    raise OSError(9, "Bad file descriptor")
except OSError as e:
    _testcapi.write_unraisable_exc(e, None, None)
import logging; logging.getLogger("bastion.x").warning("still one line each")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    objs = [json.loads(ln) for ln in out.stderr.splitlines()]
    messages = [o["message"] for o in objs]
    assert "Exception ignored when trying to write to the signal wakeup fd:" in messages
    assert "half and\x1b the rest" in messages and "\x1b" not in out.stderr
    assert "still one line each" in messages and "None" not in " ".join(messages)
    assert any("Bad file descriptor" in o.get("exception", "") for o in objs)
