"""A list that costs nothing while nothing changes: rebuilt only when its rows change (the cursor stays on its row),
its age column rendered here from timestamps (no request to the daemon), redrawn when a shown age changes and
never in between: one timer per table, set for the next such moment.

Ages are shown to the minute (``<1m``, ``3m``, ``2h05m``): a clock in seconds would redraw the screen every second
for as long as it is open (3-4 ms of CPU each time, measured), to say what nobody reads."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from textual.timer import Timer
from textual.widgets import DataTable

AGE_STEP = 60  # seconds: an age's text changes once a minute


def ago(sec: float) -> str:
    """A time elapsed, to the minute: <1m, 3m, 2h05m."""
    sec = max(int(sec), 0)
    if sec < 60:
        return "<1m"
    if sec < 3600:
        return f"{sec // 60}m"
    return f"{sec // 3600}h{sec % 3600 // 60:02d}m"


class Row:
    """One row: its key, its cells without the age, and when its age counts from (epoch seconds; None: no age)."""

    __slots__ = ("key", "cells", "since")

    def __init__(self, key: str, cells: Sequence[Any], since: float | None = None):
        self.key, self.cells, self.since = key, tuple(cells), since

    def signature(self) -> tuple[str, tuple[str, ...]]:
        return self.key, tuple(str(c) for c in self.cells)  # rich Text compares by its plain text


class ListTable(DataTable[Any]):
    """A DataTable of rows with keys. ``age_at``: the index of the age column, or None; its text is
    ``age_text(seconds)``, which changes only every ``age_step`` seconds from the row's ``since``."""

    def __init__(self, *, age_at: int | None = None, age_text: Callable[[float], str] = ago,
                 age_step: float = AGE_STEP, **kw: Any):
        super().__init__(**kw)
        self.age_at, self.age_text, self.age_step = age_at, age_text, age_step
        self.rebuilds = 0  # times the rows were rebuilt (a test's measure of an idle screen)
        self._shown: list[tuple[str, tuple[str, ...]]] | None = None
        self._since: dict[str, float] = {}
        self._ages: dict[str, str] = {}
        self._ticker: Timer | None = None

    def show(self, rows: Sequence[Row]) -> bool:
        """Show ``rows``; True if that changed the table (when nothing but the ages would, nothing is redrawn)."""
        self._since = {r.key: r.since for r in rows if r.since is not None}
        shown = [r.signature() for r in rows]
        if shown == self._shown:
            self._tick()
            return False
        key = self.key_at_cursor()
        row = self.cursor_row
        self.clear()
        self._ages = {}
        now = time.time()
        for r in rows:
            cells = list(r.cells)
            if self.age_at is not None:
                text = self.age_text(now - r.since) if r.since is not None else "?"
                self._ages[r.key] = text
                cells.insert(self.age_at, text)
            self.add_row(*cells, key=r.key)
        self._shown = shown
        self.rebuilds += 1
        if rows:
            keys = [r.key for r in rows]
            self.move_cursor(row=keys.index(key) if key in keys else min(row, len(rows) - 1))
        self._arm()
        return True

    def key_at_cursor(self) -> str | None:
        """The key of the row under the cursor."""
        if not self.row_count or not 0 <= self.cursor_row < self.row_count:
            return None
        value = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return None if value is None else str(value)

    def _arm(self) -> None:
        """Set the one timer for the next moment a shown age changes (none if no age is shown)."""
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None
        if self._since and self.age_at is not None:
            now = time.time()
            wait = min(self.age_step - (now - since) % self.age_step for since in self._since.values())
            self._ticker = self.set_timer(wait + 0.05, self._tick, name="ages")

    def _tick(self) -> None:
        """Redraw the ages whose text changed; set the timer again."""
        if self.age_at is not None and self.columns:
            column = self.ordered_columns[self.age_at].key
            now = time.time()
            for key, since in self._since.items():
                text, was = self.age_text(now - since), self._ages.get(key)
                if was is not None and text != was:
                    self._ages[key] = text
                    self.update_cell(key, column, text, update_width=len(text) > len(was))
        self._arm()
