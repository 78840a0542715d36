"""Recording one brokered session as the relay moves its bytes: output as is, typed input only once it is known
to have been echoed (what is typed with echo off, a password, is never recorded), observers fed as it is recorded.
A transfer session's bytes are file contents, not a screen: they are only counted and hashed."""

from __future__ import annotations

import logging
from collections.abc import Callable

from recorder.asciicast import EchoGuard
from recorder.recording import Recording
from recorder.transferlog import is_transfer_log

log = logging.getLogger(__name__)


class Tee:
    """Records one brokered session: output as-is, input only once it is known to have been echoed."""

    def __init__(self, writer: Recording):
        self.writer = writer
        # a transfer log's bytes are file contents, not a screen: observers are not sent them
        self.observable = not is_transfer_log(writer.path)
        self.guard = EchoGuard()
        self._hidden = 0
        self.watchers: set[Callable[[bytes], None]] = set()  # live observers get the output as it is recorded

    def _watch(self, data: bytes) -> None:
        for w in list(self.watchers):
            try:
                w(data)
            except Exception:  # an observer's failure is never the observed session's
                log.exception("observer failed")
                self.watchers.discard(w)

    def said(self, data: bytes) -> None:
        """The bastion's own words on the operator's terminal: recorded and observed like output."""
        self.writer.output(data)
        self._watch(data)

    def input(self, data: bytes, echo: bool | None) -> None:
        if not self.observable:  # a transfer log counts and hashes the bytes: no echo to guess, no screen
            self.writer.input(data)
            return
        self.guard.set_echo_known(echo)
        for chunk in self.guard.feed_input(data, 0.0):
            self.writer.input(chunk)
        self._note_hidden()

    def output(self, data: bytes) -> None:
        self.writer.output(data)
        if not self.observable:
            return
        if self.watchers:
            self._watch(data)
        for chunk in self.guard.feed_output(data, 0.0):
            self.writer.input(chunk)
        self._note_hidden()

    def _note_hidden(self) -> None:
        if self.guard.hidden_count != self._hidden:
            self._hidden = self.guard.hidden_count
            self.writer.marker("input not recorded: typed while echo was off")
