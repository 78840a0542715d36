"""``bastion audit export``: history sent again, into the configured sinks or a file, without touching their
cursors (the live export goes on as it was; a receiver may see an event twice and drops it by its ``hash``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from bastion.export import cursor
from bastion.export.filesink import FileSink
from bastion.export.schema import encode
from bastion.store.db import Store

PAGE = 1000


class StreamSink:
    """JSON lines to an open text stream (standard output)."""

    def __init__(self, out: TextIO):
        self.out = out

    def send(self, records: Sequence[dict[str, Any]]) -> None:
        self.out.writelines(encode(r) + "\n" for r in records)
        self.out.flush()

    def close(self) -> None:
        pass


def to_file(path: str) -> StreamSink | FileSink:
    """``--to-file PATH``: appended to PATH, never rotated (``-``: standard output)."""
    return StreamSink(sys.stdout) if path == "-" else FileSink(Path(path), 1 << 62, 1)


def pages(store: Store, *, since: datetime | None = None, from_seq: int | None = None,
          until: datetime | None = None) -> Iterator[list[dict[str, Any]]]:
    """The chain's events from ``from_seq`` (a position) or ``since`` (a time) on, before ``until``, oldest first,
    a page at a time."""
    seq = from_seq - 1 if from_seq is not None else cursor.first_seq_since(store, since) if since else 0
    last = cursor.first_seq_since(store, until) if until is not None else cursor.head_seq(store)
    while seq < last:
        page = cursor.events_after(store, seq, PAGE, until_seq=last)
        if not page:
            return
        yield page
        seq = page[-1]["seq"]
