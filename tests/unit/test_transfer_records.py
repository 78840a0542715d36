"""Transfer sessions' recordings (a chained JSON-lines log, read by every player as a cast of its operations), the
archive of transferred files, the tree rule of the exec form, and the target in the user name."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from bastion.ssh.server import split_target
from policies.engine import Action, PolicySet, Rule
from policies.transfer import Transfer, evaluate_transfer, may_match_below
from recorder.archive import Spool, archived_path, file_sha256, prune_archive
from recorder.asciicast import iter_events, read_cast, read_header
from recorder.seekindex import complete_events
from recorder.textindex import index_rows
from recorder.transferlog import TransferLog, iter_records


@pytest.mark.parametrize(("name", "want"), [
    ("alice", ("alice", None)), ("alice+web1", ("alice", "web1")), ("alice+", ("alice", "")),
    ("alice+web1+x", ("alice", "web1+x")), ("+web1", ("", "web1")),
])
def test_split_target(name: str, want: tuple[str, str | None]) -> None:
    assert split_target(name) == want


@pytest.mark.parametrize(("pattern", "directory", "want"), [
    ("/etc/**", "/", True), ("/etc/**", "/etc", True), ("/etc/**", "/etc/ssh", True), ("/etc/**", "/tmp", False),
    ("/tmp/prot/**", "/tmp", True), ("/tmp/prot/**", "/tmp/protected", False), ("*/.ssh/**", "/home/a", True),
    ("/srv/*.conf", "/srv/app", True), ("/srv/app.conf", "/srv/other", False),
])
def test_a_tree_may_match_below(pattern: str, directory: str, want: bool) -> None:
    assert may_match_below(pattern, directory) is want


def test_an_exec_upload_into_a_directory_meets_a_rule_below_it() -> None:
    rule = Rule("prot", Action.REQUIRE_APPROVAL, transfer=("upload",), paths=("/tmp/prot/**",))
    policy = PolicySet("p", Action.ALLOW, (rule,))
    tree = evaluate_transfer(policy, Transfer("upload", "/tmp", tree=True), groups=(), resource="r")
    one = evaluate_transfer(policy, Transfer("upload", "/tmp/other.txt"), groups=(), resource="r")
    assert (tree.action, tree.rule) == (Action.REQUIRE_APPROVAL, "prot") and one.action == Action.ALLOW


def test_renaming_a_parent_directory_moves_what_a_rule_protects() -> None:
    rule = Rule("prot", Action.REQUIRE_APPROVAL, transfer=("rename",), paths=("/srv/app/secrets/**",))
    policy = PolicySet("p", Action.ALLOW, (rule,))
    parent = evaluate_transfer(policy, Transfer("rename", "/srv/app", "/srv/old"), groups=(), resource="r")
    sibling = evaluate_transfer(policy, Transfer("rename", "/srv/web", "/srv/old"), groups=(), resource="r")
    assert parent.action == Action.REQUIRE_APPROVAL and sibling.action == Action.ALLOW


def test_a_transfer_log_is_chained_json_lines_and_plays_as_a_cast(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    log = TransferLog(path, title="alice@web1 (sftp)")
    log.marker("session s: alice opened web1")
    log.input(b"\x00\x00\x00\x05\x01\x00\x00\x00\x03")  # bytes are counted and hashed, never kept
    log.op({"op": "upload", "path": "/srv/a b.txt", "size": 3, "sha256": "ab" * 32, "decision": "allow"})
    sha = log.close()
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    records = list(iter_records(path))
    assert [r.get("op") or ("end" if r.get("end") else "marker") for r in records] == ["marker", "upload", "end"]
    assert records[-1]["bytes_in"] == 9 and b"\x03" not in path.read_bytes()
    assert read_header(path)["title"] == "alice@web1 (sftp)"
    events = list(iter_events(path))
    assert any(e.code == "o" and "upload /srv/a b.txt 3 bytes" in e.data for e in events)
    assert any(e.code == "m" and e.data.startswith("upload /srv/a b.txt") for e in events)
    assert not read_cast(path).errors
    assert any("sha256 " + "ab" * 32 in r.text for r in index_rows(path))
    # an observer follows a live session from the file: the operations, not the header, reach its screen
    _, live = complete_events(path, 0)
    assert [e.code for e in live if e.code == "o"] == ["o", "o"] and "upload /srv/a b.txt" in live[1].data


def test_the_archive_keeps_bytes_by_hash_once(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    data = os.urandom(5000)
    a = Spool(root, 1 << 20)
    a.write(1000, data[1000:])  # out of order: the spool hashes itself at the end
    a.write(0, data[:1000])
    digest = a.keep(None)
    assert digest == hashlib.sha256(data).hexdigest()
    kept = archived_path(root, digest)
    assert kept.read_bytes() == data and file_sha256(kept) == digest
    b = Spool(root, 1 << 20)
    b.write(0, data)
    assert b.keep(digest) == digest and len(list(root.glob("*/*"))) == 1
    big = Spool(root, 100)
    big.write(0, data)
    assert big.keep(None) is None and "max_archive_bytes" in big.refused
    os.utime(kept, (time.time() - 10 * 86400,) * 2)
    assert prune_archive(root, 5) == [kept] and not kept.exists()
    with pytest.raises(ValueError):
        archived_path(root, "../../etc/passwd")
