"""The recording of a transfer session: a JSON-lines log of operations, not a terminal cast.

An sftp session, or an exec of a binary protocol (``scp -t``, ``rsync --server``, ``git-upload-pack``), carries file
contents, not a screen: recorded as a cast it would be gigabytes of escaped binary that no player can show and no
search can read. Its recording is instead one JSON object per line -- a header, then each operation (op, path,
size, SHA-256 of the contents, the decision and its rule, the time), markers, and at the end the byte counts and
SHA-256 of everything that went each way. The file is written and hashed like a cast (same writer thread, same
SHA-256 chained in the store when it is closed), so ``audit verify`` detects a changed line the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from recorder.sink import BackgroundSink, FileSink, Sink

SUFFIX = ".jsonl"
KIND = "transfer"


def is_transfer_log(path: Path | str) -> bool:
    """Whether a recording is a transfer log (by its name: the store keeps the name, S3 keys end the same)."""
    return str(path).endswith(SUFFIX)


class TransferLog:
    """Append-only transfer log with the surface of :class:`recorder.asciicast.CastWriter` that a brokered session
    uses (``output``/``input`` count and hash the bytes instead of keeping them)."""

    def __init__(self, path: Path | str, *, title: str, timestamp: float | None = None,
                 clock: Callable[[], float] = time.monotonic, background: bool = False) -> None:
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o640)
        f = os.fdopen(fd, "wb")
        self._sink: Sink = BackgroundSink(f) if background else FileSink(f)
        self._clock = clock
        self._start = clock()
        self._sha = hashlib.sha256()
        self._bytes = 0
        self._closed = False
        self._digest = ""
        self._streams = {"in": hashlib.sha256(), "out": hashlib.sha256()}
        self._counts = {"in": 0, "out": 0}
        self._line({"version": 1, "kind": KIND, "title": title,
                    "timestamp": int(timestamp if timestamp is not None else time.time())})

    @property
    def path(self) -> Path:
        return self._path

    @property
    def bytes_written(self) -> int:
        return self._bytes

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def backlog(self) -> int:
        return self._sink.backlog

    def wait_written(self, upto: int, timeout: float = 10.0) -> bool:
        return self._sink.wait_written(upto, timeout)

    def _line(self, obj: dict[str, Any]) -> None:
        text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"))  # ASCII: no line separator inside a line
        data = text.encode() + b"\n"
        self._sink.write(data)
        self._sha.update(data)
        self._bytes += len(data)

    def _now(self) -> float:
        return round(self._clock() - self._start, 6)

    def output(self, data: bytes) -> None:
        """Bytes that went to the operator: counted and hashed, not kept."""
        if not self._closed:
            self._streams["out"].update(data)
            self._counts["out"] += len(data)

    def input(self, data: bytes) -> None:
        """Bytes that came from the operator: counted and hashed, not kept."""
        if not self._closed:
            self._streams["in"].update(data)
            self._counts["in"] += len(data)

    def resize(self, cols: int, rows: int) -> None:
        """No terminal: nothing to record."""

    def marker(self, label: str) -> None:
        if not self._closed and label:
            self._line({"t": self._now(), "marker": label})

    def op(self, record: dict[str, Any]) -> None:
        """One operation: ``op``, ``path`` and what else is known (``size``, ``sha256``, ``decision``, ``rule``,
        ``result``)."""
        if not self._closed:
            self._line({"t": self._now(), **record})

    def close(self) -> str:
        """Write the totals, wait for the disk, close; the hex SHA-256 of the file. Idempotent; call it off an
        event loop (it waits for the writer thread)."""
        if not self._closed:
            try:
                self._line({"t": self._now(), "end": True, "bytes_in": self._counts["in"],
                            "bytes_out": self._counts["out"], "sha256_in": self._streams["in"].hexdigest(),
                            "sha256_out": self._streams["out"].hexdigest()})
            finally:
                self._closed = True
                self._digest = self._sha.hexdigest()
                self._sink.close()
        return self._digest


def iter_records(path: Path | str, errors: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """The records of a transfer log after its header; a damaged line ends the reading (described in
    ``errors``)."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                obj = json.loads(raw)
            except ValueError:
                if errors is not None:
                    errors.append(f"{path}: line {n} is not JSON; the rest is not read")
                return
            if not isinstance(obj, dict):
                if errors is not None:
                    errors.append(f"{path}: line {n} is not an object; the rest is not read")
                return
            if n == 1:
                if obj.get("kind") != KIND:
                    if errors is not None:
                        errors.append(f"{path}: not a transfer log")
                    return
                continue
            yield obj


def describe(record: dict[str, Any]) -> str:
    """One line of text for a record, as a player or a search shows it."""
    if "marker" in record:
        return f"-- {record['marker']}"
    if record.get("end"):
        return (f"-- end: {record.get('bytes_in', 0)} bytes in (sha256 {record.get('sha256_in', '')}), "
                f"{record.get('bytes_out', 0)} bytes out (sha256 {record.get('sha256_out', '')})")
    parts = [str(record.get("op", "?")), str(record.get("path", ""))]
    if record.get("other"):
        parts += ["->", str(record["other"])]
    if record.get("size") is not None:
        parts.append(f"{record['size']} bytes")
    if record.get("sha256"):
        parts.append(f"sha256 {record['sha256']}")
    if record.get("decision"):
        parts.append(f"[{record['decision']}" + (f" by rule {record['rule']}" if record.get("rule") else "") + "]")
    if record.get("result"):
        parts.append(f"=> {record['result']}")
    return " ".join(parts)
