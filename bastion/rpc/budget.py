"""Replies that always fit in one RPC frame: a list is cut where the next item would pass its share of the frame,
and the reply says how many were left out, so the menu can say so instead of going quiet (an oversized reply is
refused with ``too_large``: an error the auditor sees, but no list)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

from bastion.rpc.proto import MAX_FRAME

T = TypeVar("T")


def encoded_size(obj: Any) -> int:
    """Bytes ``obj`` takes in a frame (as the protocol encodes it)."""
    return len(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode())


def fit(items: Sequence[T], share: float) -> tuple[list[T], int]:
    """The leading ``items`` that fit in ``share`` of a frame (at least one), and how many did not."""
    budget, size = int(MAX_FRAME * share), 0
    out: list[T] = []
    for item in items:
        n = encoded_size(item) + 1
        if out and size + n > budget:
            break
        out.append(item)
        size += n
    return out, len(items) - len(out)
