"""The file sink: JSON lines appended to a file that is rotated by size (``PATH`` -> ``PATH.1`` -> ``PATH.2`` ...,
the oldest beyond ``keep`` removed).

Each batch is written under an exclusive lock (``.NAME.lock`` beside it: the daemon and a ``bastion audit
export`` replay never interleave, nor rotate under each other), with the file opened afresh (a rotation by the
other is seen), and fsynced before the caller moves its cursor. A line torn by a crash mid-write is cut off
before the next write (its event is sent again: the cursor had not moved past it), so the file is always whole
JSON lines.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bastion.export.schema import encode
from bastion.export.sinks import DeliveryError


def rotate(path: Path, keep: int) -> None:
    """``PATH.(keep-1)`` -> ``PATH.keep`` (the old one gone), ..., ``PATH`` -> ``PATH.1``."""
    for i in range(keep - 1, 0, -1):
        src = path.with_name(f"{path.name}.{i}")
        if src.exists():
            os.replace(src, path.with_name(f"{path.name}.{i + 1}"))
    if path.exists():
        os.replace(path, path.with_name(f"{path.name}.1"))


def _cut_torn_line(fd: int) -> int:
    """Truncate a last line without its newline (a crash mid-write); the file's size after."""
    size = os.lseek(fd, 0, os.SEEK_END)
    if size == 0:
        return 0
    if os.pread(fd, 1, size - 1) == b"\n":
        return size
    pos = size
    while pos > 0:
        chunk = os.pread(fd, min(65536, pos), max(0, pos - 65536))
        pos -= len(chunk)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            pos += nl + 1
            break
    os.ftruncate(fd, pos)
    return pos


class FileSink:
    """Appends lines to ``path``; a file reaching ``max_bytes`` is rotated first (one line bigger than that gets
    a file of its own)."""

    def __init__(self, path: Path, max_bytes: int, keep: int, fsync: bool = True):
        self.path, self.max_bytes, self.keep, self.fsync = path, max_bytes, keep, fsync

    def send(self, records: Sequence[dict[str, Any]]) -> None:
        self.write([encode(r) for r in records])

    def write(self, lines: Sequence[str]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            lock = os.open(self.path.with_name(f".{self.path.name}.lock"), os.O_WRONLY | os.O_CREAT, 0o640)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self._append(lines)
            finally:
                os.close(lock)  # releases the lock
        except OSError as e:
            raise DeliveryError(f"{type(e).__name__}: {e}") from None

    def _append(self, lines: Sequence[str]) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            size = _cut_torn_line(fd)
            buf = bytearray()
            for line in lines:
                data = line.encode() + b"\n"
                if size + len(buf) and size + len(buf) + len(data) > self.max_bytes:
                    fd = self._flush_and_rotate(fd, buf)
                    size, buf = 0, bytearray()
                buf += data
            self._write(fd, buf)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def _flush_and_rotate(self, fd: int, buf: bytearray) -> int:
        """Write what is buffered, rotate, and return the new file's descriptor (the old one is closed only once
        the new one is open: the caller closes whichever it holds)."""
        self._write(fd, buf)
        if self.fsync:
            os.fsync(fd)
        rotate(self.path, self.keep)
        new = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        os.close(fd)
        return new

    @staticmethod
    def _write(fd: int, buf: bytes | bytearray) -> None:
        view = memoryview(buf)
        while view:
            view = view[os.write(fd, view):]

    def close(self) -> None:
        pass
