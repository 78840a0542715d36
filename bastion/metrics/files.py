"""The directory of prometheus_client's multiprocess mode: made private at start, and kept small.

Each process that counts writes ``counter_PID.db``, ``histogram_PID.db``, ``gauge_livesum_PID.db``... there. With
a process per SSH connection, thousands of processes come and go a day: left alone, the directory would grow with
every one of them and each scrape would read them all. So when the supervisor reaps a process, its live gauges go
(``mark_process_dead``) and its counters and histograms are added into ``counter_archive.db`` and
``histogram_archive.db`` (the merge keeps the totals; a counter never goes down), then its files go. A scrape
reads the files under a shared lock and a merge takes it exclusively, so no scrape sees a process counted twice or
not at all.

The supervisor is the only process that merges and forks, and it merges a pid before it forks again: a pid reused
by a new process can never be merged while that process writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import logging
import os
import shutil
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)
LOCK = ".lock"
MERGED = ("counter", "histogram")  # the kinds whose dead processes' values must be kept (summed)


def metrics_dir(state_dir: Path, port: int) -> Path:
    """Where this node's files go: systemd's RuntimeDirectory (a tmpfs) when there is one, else beside the host
    key (the daemon's own state directory, never shared between nodes). The SSH port keeps two daemons that share a
    state directory apart."""
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    base = Path(runtime) if runtime else state_dir
    return base / f"metrics-{port}"


def prepare(path: Path) -> None:
    """Empty and private (0700, ours, not a symlink): a previous run's files would be counted again, and another
    user's would be counted at all."""
    with contextlib.suppress(FileNotFoundError):
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode) and not stat.S_ISLNK(st.st_mode) and st.st_uid == os.geteuid():
            shutil.rmtree(path)
        else:
            raise RuntimeError(f"{path} exists and is not a directory of this user: remove it")
    path.mkdir(mode=0o700, parents=True)
    os.chmod(path, 0o700)
    (path / LOCK).touch(mode=0o600)


@contextlib.contextmanager
def _locked(path: Path, how: int) -> Iterator[bool]:
    """The directory's lock (``how``: LOCK_SH or LOCK_EX, maybe with LOCK_NB); yields whether it was taken."""
    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, how)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


class Reaper:
    """The supervisor's part: a dead process's files folded into the archive (see the module's docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.owed: list[int] = []

    def dead(self, pid: int) -> None:
        """``pid`` was reaped: its live gauges go now; its counters are merged now, or at the next :meth:`settle`
        if a scrape holds the lock."""
        mark_process_dead(pid, str(self.path))
        self.owed.append(pid)
        self.settle(wait=False)

    def settle(self, *, wait: bool) -> None:
        """Merge what is owed (``wait``: even if a scrape must finish first; the supervisor waits before a fork)."""
        if not self.owed:
            return
        with _locked(self.path, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB)) as taken:
            if not taken:
                return
            for pid in self.owed:
                try:
                    self._merge(pid)
                except Exception:  # a torn file must not stop the supervisor: its counts are lost, said once
                    log.exception("metrics: cannot merge the counters of process %d", pid)
            self.owed.clear()

    def _merge(self, pid: int) -> None:
        for kind in MERGED:
            src = self.path / f"{kind}_{pid}.db"
            if not src.exists():
                continue
            archive = MmapedDict(str(self.path / f"{kind}_archive.db"))
            try:
                for key, value, _ts, _pos in MmapedDict.read_all_values_from_file(str(src)):
                    total, _ = archive.read_value(key)
                    archive.write_value(key, total + value, 0.0)
            finally:
                archive.close()
            src.unlink()


class LockedCollector(MultiProcessCollector):
    """prometheus_client's collector of the directory's files, read under the shared lock (see :class:`Reaper`)."""

    def __init__(self, path: Path) -> None:
        super().__init__(None, str(path))
        self.dir = path

    def collect(self) -> Iterable:
        with _locked(self.dir, fcntl.LOCK_SH):
            return list(self.merge(glob.glob(os.path.join(self._path, "*.db")), accumulate=True))


def file_count(path: Path) -> int:
    """How many per-process files the directory holds (a bench and a test watch it stay small)."""
    return len(glob.glob(str(path / "*.db")))


__all__ = ["Collector", "LockedCollector", "Reaper", "file_count", "metrics_dir", "prepare"]
