"""A reviewer's moves in the queue (F2) of a TUI on a real terminal."""

from __future__ import annotations

from tests.support.terminal import Terminal

APPROVE_DIALOG = r"y: approve · any other key: cancel"


def approve(reviewer: Terminal, timeout: float = 15) -> str:
    """Approve the selected request: ``a`` opens a dialog that names it, ``y`` (the deliberate key) approves.
    Returns the screen as the dialog showed it."""
    reviewer.send("a")
    reviewer.wait_for(APPROVE_DIALOG, timeout)
    shown = reviewer.screen_text()
    reviewer.send("y")
    return shown
