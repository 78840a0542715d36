"""Cross-node events over PostgreSQL LISTEN/NOTIFY: a node that creates or decides an approval request says so on
``bastion_events``; every node listening wakes its waiters and pushes the change to its reviewers' screens at
once. (Waiters also poll the store each second, so a lost notification costs at most that.)"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)
CHANNEL = "bastion_events"
RESYNC = {"kind": "approval", "id": None, "node": ""}  # "requests may have changed": every queue screen reloads


def conninfo(url: str) -> str:
    """The psycopg connection string of a SQLAlchemy ``postgresql+psycopg://`` URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgListener:
    """A thread that LISTENs and hands each payload (parsed JSON) to ``on_event`` on the event loop."""

    def __init__(self, url: str, on_event: Callable[[dict[str, Any]], None]) -> None:
        self.url, self.on_event = url, on_event
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.listening = threading.Event()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="pg-listen", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg

        lost = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(conninfo(self.url), autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    if lost:  # what was said while we were not listening is gone: screens reload once
                        self._deliver(json.dumps(RESYNC))
                        lost = False
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=1.0):
                            self._deliver(n.payload)
            except Exception as e:  # the database went away: say so, retry; waiters still poll
                self.listening.clear()
                lost = True
                log.warning("LISTEN %s: %s; retrying in 5 s", CHANNEL, e)
                self._stop.wait(5)

    def _deliver(self, payload: str) -> None:
        try:
            event = json.loads(payload)
        except ValueError:
            log.warning("LISTEN %s: ignoring a malformed payload", CHANNEL)
            return
        if isinstance(event, dict) and self._loop is not None:
            self._loop.call_soon_threadsafe(self.on_event, event)
