"""Where a recording's bytes go: straight to its file, or through one writer thread per process.

A daemon moves every session on one event loop; writing recordings there means that when the disk is slow (the
kernel throttles a process that dirties pages faster than they are written back) every session's keystrokes wait
for it -- tens of milliseconds while a few sessions stream bulk output. :class:`BackgroundSink` hands the bytes to
a writer thread instead: the caller never blocks, the file is written in the order given (complete lines, so a
recording cut by ``kill -9`` is valid up to its last complete event) as soon as the thread gets to it, and
:meth:`BackgroundSink.close` drains, fsyncs and closes. ``backlog`` lets the caller slow its source when the disk
falls behind.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from typing import IO, Protocol


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...
    def wait_written(self, upto: int, timeout: float) -> bool: ...
    def close(self) -> None: ...
    @property
    def backlog(self) -> int: ...


class FileSink:
    """Write and flush at once (tools, tests, the CLI)."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f

    def write(self, data: bytes) -> None:
        self._f.write(data)
        self._f.flush()

    @property
    def backlog(self) -> int:
        return 0

    def wait_written(self, upto: int, timeout: float) -> bool:
        return True

    def close(self) -> None:
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
        finally:
            self._f.close()


class _Writer(threading.Thread):
    """The process's recording writer: takes files with pending bytes in turn."""

    def __init__(self) -> None:
        super().__init__(name="recording-writer", daemon=True)
        self.cond = threading.Condition()
        self.ready: deque[BackgroundSink] = deque()

    def run(self) -> None:
        while True:
            with self.cond:
                while not self.ready:
                    self.cond.wait()
                sink = self.ready.popleft()
            sink._write_pending()


_writer: _Writer | None = None
_writer_lock = threading.Lock()


def _the_writer() -> _Writer:
    global _writer
    with _writer_lock:
        if _writer is None or not _writer.is_alive():
            _writer = _Writer()
            _writer.start()
        return _writer


class BackgroundSink:
    """A recording file written by the process's writer thread."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self._lock = threading.Condition()
        self._pending: list[bytes] = []
        self._backlog = 0
        self._given = 0  # bytes handed over
        self._written = 0  # bytes in the file
        self._queued = False
        self._error: OSError | None = None
        self._writer = _the_writer()

    @property
    def backlog(self) -> int:
        """Bytes given but not yet in the file."""
        return self._backlog

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._error is not None:
                raise self._error
            self._pending.append(data)
            self._backlog += len(data)
            self._given += len(data)
            if self._queued:
                return
            self._queued = True
        with self._writer.cond:
            self._writer.ready.append(self)
            self._writer.cond.notify()

    def _write_pending(self) -> None:
        """In the writer thread: everything pending, in order, in one write."""
        with self._lock:
            chunks, self._pending = self._pending, []
            self._queued = False
        data = b"".join(chunks)
        try:
            self._f.write(data)
            self._f.flush()
        except OSError as e:  # reported to the next write or to close
            with self._lock:
                self._error = e
        with self._lock:
            self._written += len(data)
            self._backlog -= len(data)
            self._lock.notify_all()

    def wait_written(self, upto: int, timeout: float) -> bool:
        """Block until the first ``upto`` bytes are in the file (False on timeout)."""
        with self._lock:
            return self._lock.wait_for(lambda: self._written >= upto or self._error is not None, timeout)

    def close(self) -> None:
        """Drain, fsync and close (blocks: call it off the event loop)."""
        with self._lock:
            given = self._given
        self.wait_written(given, 60.0)
        try:
            if self._error is not None:
                raise self._error
            os.fsync(self._f.fileno())
        finally:
            self._f.close()
