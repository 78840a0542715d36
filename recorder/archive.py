"""The archive of transferred files: the contents of each uploaded and downloaded file, kept by its SHA-256.

A transfer log says *that* alice uploaded ``/etc/app.conf`` with SHA-256 ``ab12...``; with archiving on, the bytes
themselves are kept too, under ``<recordings_dir>/archive/ab/ab12...``: content-addressed, so a file sent a hundred
times is kept once, and tamper-evident through the chain, because the transfer log that names the hash is itself
chained (``audit verify`` re-hashes each archived file a log names). A file is written as it goes by (at the
offsets the client uses), kept when its transfer ends, and given up beyond ``max_bytes`` (the log says so).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path

ARCHIVE_DIR = "archive"


def archive_root(recordings_dir: Path) -> Path:
    return recordings_dir / ARCHIVE_DIR


def archived_path(root: Path, sha256: str) -> Path:
    """Where the file with this SHA-256 is kept (whether or not it is)."""
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a SHA-256: {sha256!r}")
    return root / sha256[:2] / sha256


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class Spool:
    """One file on its way through: written at its offsets into a temporary file beside the archive."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root, self.max_bytes = root, max_bytes
        tmp = root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True, mode=0o750)
        self._path = tmp / f"{os.getpid()}-{time.monotonic_ns()}"
        self._fd: int | None = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        self.size = 0
        self.refused = ""  # why the file is not archived (too large, a disk error)

    def write(self, offset: int, data: bytes) -> None:
        if self._fd is None:
            return
        end = offset + len(data)
        if end > self.max_bytes:
            self.abandon(f"larger than max_archive_bytes ({self.max_bytes})")
            return
        try:
            os.pwrite(self._fd, data, offset)
        except OSError as e:
            self.abandon(f"cannot write the archive: {e.strerror or e}")
            return
        self.size = max(self.size, end)

    def abandon(self, why: str = "") -> None:
        """Keep nothing of this file (``why``: said in the transfer log)."""
        self.refused = self.refused or why
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        with contextlib.suppress(OSError):
            self._path.unlink()

    def keep(self, sha256: str | None) -> str | None:
        """The transfer ended: file the bytes by their SHA-256 (``sha256``: the hash computed on the way, when the
        bytes came in order; else the spool is hashed). The SHA-256 it is kept under, or None."""
        if self._fd is None:
            return None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        try:
            digest = sha256 or file_sha256(self._path)
            dest = archived_path(self.root, digest)
            dest.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            if dest.exists():  # kept already: the same bytes once
                os.utime(dest)  # its retention starts again
                self._path.unlink()
            else:
                os.replace(self._path, dest)
            return digest
        except OSError as e:
            self.refused = f"cannot keep the archive: {e.strerror or e}"
            with contextlib.suppress(OSError):
                self._path.unlink()
            return None


def prune_archive(root: Path, days: float, now: float | None = None) -> list[Path]:
    """Remove archived files not sent for ``days`` (their mtime is refreshed each time they are sent again)."""
    cutoff = (now if now is not None else time.time()) - days * 86400
    gone: list[Path] = []
    if not root.is_dir():
        return gone
    for sub in root.iterdir():
        if not sub.is_dir() or len(sub.name) != 2:
            continue
        for f in sub.iterdir():
            with contextlib.suppress(OSError):
                if f.stat().st_mtime < cutoff:
                    f.unlink()
                    gone.append(f)
    return gone
