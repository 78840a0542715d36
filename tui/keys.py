"""Keys every screen shares, so that they mean the same everywhere.

One rule: on a screen pushed over the menu (the reviewer queue, my requests, live sessions, recordings, one
recording, a timeline) both ``Esc`` and ``q`` go back one screen; only the menu's own ``q`` (and the sign-in's, which
stands in for the menu) quits and ends the connection. A reviewer who leaves the queue with ``q``, as a pager or
``less`` is left, must not be logged out. Where a text box has the keys (the recordings filter, a dialog's reason)
``q`` is a typed letter: the box takes printable keys before any binding sees them, and ``Esc`` leaves the box.
"""

from __future__ import annotations

from textual.binding import Binding

BACK = Binding("escape,q", "back", "Back", key_display="Esc/q")
"""Back to the screen below (the footer shows it once, as ``Esc/q Back``)."""
