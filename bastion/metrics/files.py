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
import json
import logging
import os
import shutil
import stat
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)
LOCK = ".lock"
READ_AHEAD = 8192  # bytes read from each file at once (a connection process's files are a few KiB)
_INT, _DOUBLE = struct.Struct("i"), struct.Struct("d")
MERGED = ("counter", "histogram")  # the kinds whose dead processes' values must be kept (summed)


def metrics_dir(state_dir: Path, port: int) -> Path:
    """Where this node's files go: systemd's RuntimeDirectory (a tmpfs) when there is one, else beside the host
    key (the daemon's own state directory, never shared between nodes). The SSH port keeps two daemons that share a
    state directory apart."""
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    base = Path(runtime) if runtime else state_dir
    return base / f"metrics-{port}"


CLAIM_WAIT = 5.0  # seconds: the processes of a daemon just killed (kill -9) take a moment to die and let go
_claimed: list[int] = []  # the open lock file of the directory this daemon owns (held while it runs)


def claim(path: Path) -> None:
    """Own ``path`` for this daemon's life (a lock beside it, kept by every process it forks): a second daemon on
    the same state directory and port must not empty the files of one that runs (it would fail to listen anyway,
    but only after)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent / f".{path.name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    deadline = time.monotonic() + CLAIM_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise RuntimeError(f"{path} belongs to a daemon that is running (same state directory and "
                                   "port)") from None
            time.sleep(0.05)
    _claimed.append(fd)


def prepare(path: Path) -> None:
    """Claimed (:func:`claim`), empty and private (0700, ours, not a symlink): a previous run's files would be
    counted again, and another user's would be counted at all."""
    claim(path)
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
        try:
            mark_process_dead(pid, str(self.path))
        except OSError as e:  # never the supervisor's end: metrics are not worth a node
            log.warning("metrics: cannot drop the gauges of process %d: %s", pid, e)
        self.owed.append(pid)
        self.settle(wait=False)

    def settle(self, *, wait: bool) -> None:
        """Merge what is owed (``wait``: even if a scrape must finish first; the supervisor waits before a fork).
        Never raises: a metrics directory someone removed must not stop the supervisor."""
        if not self.owed:
            return
        try:
            self._settle(wait)
        except OSError as e:
            log.warning("metrics: cannot merge the counters of processes %s: %s", self.owed[:10], e)
            self.owed.clear()

    def _settle(self, wait: bool) -> None:
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


def _add(a: float, b: float) -> float:
    return a + b


COMBINE: dict[str, Callable[[float, float], float]] = {
    "": _add, "sum": _add, "livesum": _add, "max": max, "livemax": max, "min": min, "livemin": min}
"""How one series' values from several processes combine, by gauge mode ("": counters and histograms). The bastion
defines no gauge of the per-process modes (all, liveall, mostrecent); any would be read as max."""


class _Layout:
    """Where the values of one file are (keys never move once written), so the next scrape reads only numbers: one
    ``unpack_from`` of a struct that skips the keys gives every value of the file at once."""

    def __init__(self, inode: int, typ: str, mode: str) -> None:
        self.inode, self.typ, self.mode = inode, typ, mode
        self.parsed = 8  # bytes of the file read for keys so far (the header is 8)
        self.keys: list[tuple[str, str, str]] = []  # (type, gauge mode, key) of each value, in file order
        self.offsets: list[int] = []
        self.struct = struct.Struct("")

    def read(self, data: bytes, used: int) -> tuple[list[tuple[str, str, str]], tuple[float, ...]]:
        pos = self.parsed
        if pos < used:  # keys written since the last scrape
            while pos < used:
                n = _INT.unpack_from(data, pos)[0]
                if n <= 0 or pos + 4 + n > used:
                    raise RuntimeError("a metrics file is corrupted")
                key = data[pos + 4:pos + 4 + n].decode()
                pos += 4 + n + (8 - (n + 4) % 8)
                self.keys.append((self.typ, self.mode, key))
                self.offsets.append(pos)
                pos += 16
            self.parsed = pos
            fmt, at = "=", 0
            for off in self.offsets:
                fmt += f"{off - at}xd" if off > at else "d"
                at = off + 8
            self.struct = struct.Struct(fmt)
        return self.keys, self.struct.unpack_from(data, 0)


class LockedCollector(MultiProcessCollector):
    """The directory's files, read under the shared lock (see :class:`Reaper`), and merged faster than
    prometheus_client's own collector, which makes a sample object of every value of every file and decodes every
    key at every scrape (160 ms for 500 processes' files here). This one remembers where each file's values are
    (by inode: a pid reused is a new file), reads each file with one ``pread``, adds the raw values per series,
    then hands the library one sample per series, so histograms and gauge modes mean what the library says."""

    def __init__(self, path: Path) -> None:
        super().__init__(None, str(path))
        self.dir = path
        self._keys: dict[str, tuple[str, str, tuple[tuple[str, str], ...], str]] = {}
        self._layouts: dict[str, _Layout] = {}

    def _parse(self, key: str) -> tuple[str, str, tuple[tuple[str, str], ...], str]:
        got = self._keys.get(key)
        if got is None:
            metric, name, labels, help_text = json.loads(key)
            if len(self._keys) > 100000:  # labels are bounded; a leak must not grow forever all the same
                self._keys.clear()
            got = self._keys[key] = (metric, name, tuple(sorted(labels.items())), help_text)
        return got

    def _values(self, entry: os.DirEntry[str], typ: str, mode: str) -> tuple[list[tuple[str, str, str]],
                                                                         tuple[float, ...]]:
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # a live gauge's process was just marked dead
            return [], ()
        try:
            data = os.pread(fd, READ_AHEAD, 0)
            used = _INT.unpack_from(data, 0)[0] if len(data) >= 8 else 0
            if used > len(data):
                data += os.pread(fd, used - len(data), len(data))
        finally:
            os.close(fd)
        layout = self._layouts.get(entry.name)
        if layout is None or layout.inode != entry.inode() or used < layout.parsed:
            layout = self._layouts[entry.name] = _Layout(entry.inode(), typ, mode)
        return layout.read(data, min(used, len(data)))

    def collect(self) -> Iterable:
        merged: dict[tuple[str, str, str], float] = {}
        seen: set[str] = set()
        with _locked(self.dir, fcntl.LOCK_SH), os.scandir(self.dir) as it:
            for entry in it:
                if not entry.name.endswith(".db"):
                    continue
                seen.add(entry.name)
                parts = entry.name.split("_")
                typ, mode = parts[0], parts[1] if parts[0] == "gauge" else ""
                combine = COMBINE.get(mode, max)
                keys, vals = self._values(entry, typ, mode)
                if combine is _add:
                    for k, v in zip(keys, vals, strict=True):
                        merged[k] = merged.get(k, 0.0) + v
                    continue
                for k, v in zip(keys, vals, strict=True):
                    old = merged.get(k)
                    merged[k] = v if old is None else combine(old, v)
        for gone in self._layouts.keys() - seen:
            del self._layouts[gone]
        found: dict[str, Metric] = {}
        for (typ, mode, key), value in merged.items():
            metric_name, name, labels, help_text = self._parse(key)
            metric = found.get(metric_name)
            if metric is None:
                metric = found[metric_name] = Metric(metric_name, help_text, typ)
                metric._multiprocess_mode = mode  # type: ignore[attr-defined]  # what the library's merge reads
            metric.add_sample(name, labels, value)  # type: ignore[arg-type]  # the library's merge takes pairs
        return list(self._accumulate_metrics(found, True))


def file_count(path: Path) -> int:
    """How many per-process files the directory holds (a bench and a test watch it stay small)."""
    return len(glob.glob(str(path / "*.db")))


__all__ = ["Collector", "LockedCollector", "Reaper", "file_count", "metrics_dir", "prepare"]
