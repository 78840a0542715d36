"""Bytes up and down per user and resource, for ``bastion audit report``: read from the sessions' transfer logs
(an SFTP session's operations carry each file's size; an exec transfer's log carries what went each way)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from recorder.storage import is_remote
from recorder.transferlog import is_transfer_log, iter_records


def _one(path: str, mode: str) -> tuple[int, int, int, int, bool]:
    """(files up, bytes up, files down, bytes down, whether the log could be read) of one transfer log."""
    up = down = n_up = n_down = 0
    end: dict[str, Any] = {}
    try:
        for rec in iter_records(path):
            if rec.get("end"):
                end = rec
            elif rec.get("result") == "ok" and isinstance(rec.get("size"), int):
                if rec.get("op") == "upload":
                    n_up, up = n_up + 1, up + rec["size"]
                elif rec.get("op") == "download":
                    n_down, down = n_down + 1, down + rec["size"]
    except OSError:
        return 0, 0, 0, 0, False
    if mode != "sftp" and end:  # the exec form: what went to the target is the upload, what came back the download
        up, down = int(end.get("bytes_in", 0)), int(end.get("bytes_out", 0))
    return n_up, up, n_down, down, True


def transfer_totals(sessions: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (user, resource) with transfer sessions: sessions, files and bytes each way; logs kept only in
    a bucket are counted as ``unread`` (the report does not download them)."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for s in sessions:
        path = s.get("recording")
        if not path or not is_transfer_log(path):
            continue
        row = rows.setdefault((s["user"], s["resource"]), {
            "user": s["user"], "resource": s["resource"], "sessions": 0, "files_up": 0, "bytes_up": 0,
            "files_down": 0, "bytes_down": 0, "unread": 0})
        row["sessions"] += 1
        if is_remote(path) or not Path(path).is_file():
            row["unread"] += 1
            continue
        n_up, up, n_down, down, ok = _one(path, s.get("mode") or "")
        row["files_up"] += n_up
        row["bytes_up"] += up
        row["files_down"] += n_down
        row["bytes_down"] += down
        row["unread"] += 0 if ok else 1
    return sorted(rows.values(), key=lambda r: (r["user"], r["resource"]))
