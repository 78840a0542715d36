"""``log_format: json``: one JSON object per log line, for journald and log collectors.

Each line carries ``time`` (UTC, ISO 8601), ``level``, ``node``, ``worker`` (supervisor, node, connection,
daemon), ``pid``, ``logger``, ``message`` and, when known, ``user``, ``client`` and ``connection`` (the process
serving it), ``resource`` and ``event``, plus ``exception`` (the traceback, one string).

Where they come from: the process's own fields (:func:`set_process`), then fields bound to the running task
(:func:`bind`, a context variable: what a connection's tasks set is theirs), then a record's ``extra``
(``log.info(..., extra={"resource": r})``). Most log lines of a connection name it as ``user@client: ...`` today
(``ctx.who``); that prefix is read back into ``user`` and ``client`` too.

No raw control character reaches the output: the encoder writes C0 controls as ``\\uXXXX`` and this module does
the same for DEL, C1 controls, U+2028/U+2029 and lone surrogates (what ``surrogateescape`` makes of bad bytes),
so a hostile string can neither break a line nor send an escape sequence to a terminal that shows the log. The
text format stays the default (and the demo's).
"""

from __future__ import annotations

import contextvars
import io
import json
import logging
import os
import re
import sys
import threading
import time
from types import TracebackType
from typing import Any

FIELDS = ("user", "client", "connection", "resource", "event", "session")
UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff]")
WHO = re.compile(r"^(?P<user>[^@\s]{1,255})@(?P<client>\S{1,300})$")
_bound: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("bastion_log_fields", default=None)
_process: dict[str, Any] = {"worker": "daemon"}
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
log = logging.getLogger(__name__)


def set_process(**fields: Any) -> None:
    """Fields of every line this process writes from now on (``node``, ``worker``, ``client``...)."""
    _process.update({k: v for k, v in fields.items() if v is not None})


def bind(**fields: str) -> contextvars.Token[dict[str, str] | None]:
    """Fields of every line written by the running task and the tasks it starts (``user``, ``resource``...)."""
    return _bound.set({**(_bound.get() or {}), **{k: v for k, v in fields.items() if v is not None}})


def _safe(text: str) -> str:
    return UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line, with no raw control character."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the line
            message = f"{record.msg!r} {record.args!r}"
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), **_process, "pid": record.process or os.getpid(),
            "logger": record.name, "message": message}
        who = record.args[0] if isinstance(record.args, tuple) and record.args else None
        if isinstance(who, str) and isinstance(record.msg, str) and (record.msg.startswith("%s: ")
                                                                     or record.msg.startswith("tui[%s]")):
            m = WHO.match(who)
            if m:
                line.update(user=m["user"], client=m["client"])
        line.update(_bound.get() or {})
        for key in FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["exception"] = record.stack_info
        return _safe(json.dumps(line, ensure_ascii=False, default=str, separators=(",", ":")))


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def use_format(log_format: str) -> None:
    """Switch every handler of the root logger to ``log_format`` (``text`` or ``json``): the daemon calls it with
    the config's ``log_format`` as it starts, before it logs anything of its own. With ``json``, what Python would
    print to stderr itself (an uncaught exception in a thread, an exception it cannot raise, a warning) is logged
    instead, so it too is one JSON line."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter(log_format))
    if log_format == "json":
        logging.captureWarnings(True)
        sys.excepthook = _uncaught
        threading.excepthook = _uncaught_in_thread
        sys.unraisablehook = _unraisable
        if not isinstance(sys.stderr, JsonLines) and sys.stderr is not None:
            sys.stderr = JsonLines(sys.stderr)


class JsonLines(io.TextIOBase):
    """``sys.stderr`` in JSON mode: what Python itself still writes there as text (the interpreter's own lines,
    such as the header of an error writing to the signal wakeup fd while a loop closes, or a library's print) is
    cut into lines, each written as a JSON record on the real stream. The log handlers keep the stream they were
    given, so nothing comes back here."""

    def __init__(self, stream: Any) -> None:
        super().__init__()
        self._stream = stream
        self._partial = ""
        self._lock = threading.Lock()
        self._format = JsonFormatter()

    def write(self, text: str) -> int:
        with self._lock:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
            for line in lines:
                self._emit(line)
        return len(text)

    def _emit(self, line: str) -> None:
        if not line.strip():
            return
        record = logging.LogRecord("stderr", logging.WARNING, __file__, 0, line, None, None)
        self._stream.write(self._format.format(record) + "\n")  # the one encoder of every JSON line
        self._stream.flush()

    def flush(self) -> None:
        self._stream.flush()

    def fileno(self) -> int:
        return int(self._stream.fileno())

    def writable(self) -> bool:
        return True


def _uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    log.critical("uncaught exception", exc_info=(kind, value, tb))


def _uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if issubclass(args.exc_type, SystemExit):  # as the default hook: a thread may end so, silently
        return
    log.error("uncaught exception in thread %s", args.thread.name if args.thread else "?",
              exc_info=(args.exc_type, args.exc_value, args.exc_traceback))  # type: ignore[arg-type]


def _unraisable(u: sys.UnraisableHookArgs) -> None:
    what = u.err_msg or "exception ignored"
    if u.object is None:  # nothing to name (an error the interpreter met outside any object)
        log.error("%s", what, exc_info=(u.exc_type, u.exc_value, u.exc_traceback))  # type: ignore[arg-type]
    else:
        log.error("%s: %r", what, u.object,
                  exc_info=(u.exc_type, u.exc_value, u.exc_traceback))  # type: ignore[arg-type]
