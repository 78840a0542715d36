"""Points in time as people type them in filters: an ISO date/time or an age (``7d``). Used by the menu's recordings
filter (through the daemon) and by ``bastion audit`` (--since, --from, --to); it sits here, in the lowest layer, so
that both can reach it without the core importing the CLI."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_REL = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class BadTime(ValueError):
    """A date or an age that cannot be read; the message says what to give instead."""


def parse_when(text: str) -> datetime:
    """An ISO date/time (UTC unless it says otherwise) or an age: ``30m``, ``12h``, ``7d``, ``2w``."""
    m = _REL.match(text.strip())
    if m:
        return datetime.now(UTC) - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadTime(f"{text!r}: give a date (2026-11-01, 2026-11-01T12:00) or an age (30m, 12h, 7d)") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
