"""Hash chains over the audit trail: each closed recording and each audit event carries the SHA-256 of its content
and of the previous link, so a modified, missing or reordered entry breaks the chain at that place.

Pure functions (no database): the store, its migrations and ``bastion audit verify`` all use these.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from typing import Any

from recorder.storage import file_chunks, sha256_of

GENESIS = "0" * 64
"""The ``prev`` of the first link of every chain."""

RECORDINGS, AUDIT = "recordings", "audit"
"""Names of the chains (rows of ``chain_heads``)."""


def _canon(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False, default=str).encode()


def recording_link(prev: str, session_id: str, sha256: str) -> str:
    """The chain value of a closed recording: ``sha256(json([prev, session_id, file_sha256]))``."""
    return hashlib.sha256(json.dumps([prev, session_id, sha256], separators=(",", ":")).encode()).hexdigest()


def ts_text(ts: datetime | None) -> str:
    """A timestamp as hashed: UTC, microseconds (SQLite hands back naive datetimes; all are UTC)."""
    if ts is None:
        return ""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def audit_link(prev: str, seq: int, *, ts: datetime | None, actor: str, action: str, outcome: str,
               resource: str | None, session_id: str | None, client_addr: str, detail: dict[str, Any] | None) -> str:
    """The hash of one audit event, chained to ``prev``."""
    body = [prev, seq, ts_text(ts), actor, action, outcome, resource, session_id, client_addr, detail or {}]
    return hashlib.sha256(_canon(body)).hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    with open(path, "rb") as f:
        return sha256_of(file_chunks(f))


def head_message(chain: str, seq: int, head: str) -> bytes:
    """The bytes an ed25519 signature of a chain head covers."""
    return _canon({"bastion-chain": chain, "seq": seq, "head": head})
