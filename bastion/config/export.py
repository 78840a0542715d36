"""``audit.export:``: where every audit event is sent as a JSON line (a size-rotated file, syslog, the systemd
journal) and how hard the bastion tries (docs/audit-export.md). The models check the shape; :func:`export_problems`
checks what needs the disk or the other sinks, so both report ``FILE:LINE: key: message``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, model_validator

from bastion.config.base import NAME_RE, StrictModel
from bastion.config.problems import Loc

if TYPE_CHECKING:
    from bastion.config.schema import Config

FACILITIES = {"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7, "uucp": 8,
              "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14, "local0": 16,
              "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23}
Facility = Literal["kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
                   "ftp", "ntp", "security", "console", "local0", "local1", "local2", "local3", "local4", "local5",
                   "local6", "local7"]
PRINTABLE = r"^[\x21-\x7e]+$"  # RFC 5424 header fields: printable US-ASCII, no spaces


class Sink(StrictModel):
    """What every sink has: a name (its cursor in the store is kept under it) and where a new one starts."""

    name: Annotated[str, Field(pattern=NAME_RE)]
    # where a sink the store has never seen starts: "all" (the whole chain, oldest first) or "new" (events
    # recorded from its first start on); a sink the store knows continues where it got to
    start: Literal["all", "new"] = "all"


class FileSink(Sink):
    """JSON lines appended to ``path``; at ``max_bytes`` it becomes ``path.1`` (``.1`` becomes ``.2``, ...), and
    ``keep`` rotated files are kept."""

    path: Annotated[str, Field(min_length=1)]
    max_bytes: Annotated[int, Field(ge=1024, le=1 << 40)] = 100 << 20
    keep: Annotated[int, Field(ge=1, le=1000)] = 10
    fsync: bool = True  # each batch reaches the disk before the cursor moves past it


class SyslogSink(Sink):
    """RFC 5424 messages, over TCP (octet-counting framing, RFC 6587) or UDP (one datagram each, RFC 5426)."""

    host: Annotated[str, Field(min_length=1, max_length=253)]
    port: Annotated[int, Field(ge=1, le=65535)] = 514
    transport: Literal["tcp", "udp"] = "tcp"
    facility: Facility = "authpriv"
    app_name: Annotated[str, Field(max_length=48, pattern=PRINTABLE)] = "bastion"
    hostname: Annotated[str, Field(max_length=255, pattern=PRINTABLE)] | None = None  # default: this host's name
    # the longest message (header included); a bigger event is sent with its detail replaced by a note of its size
    # (the default suits UDP on most networks; TCP receivers usually take more)
    max_message: Annotated[int, Field(ge=480, le=1 << 24)] = 8192


class JournalSink(Sink):
    """The systemd journal's native protocol: one entry per event with ``BASTION_*`` fields."""

    socket: Annotated[str, Field(min_length=1)] = "/run/systemd/journal/socket"
    identifier: Annotated[str, Field(max_length=64, pattern=PRINTABLE)] = "bastion"  # SYSLOG_IDENTIFIER


class ExportDelivery(StrictModel):
    """How hard the bastion tries. Every time is in seconds; the small lower bounds are for tests."""

    poll: Annotated[float, Field(ge=0.05, le=60)] = 1.0  # how often a node looks for new events
    batch: Annotated[int, Field(ge=1, le=10000)] = 500  # events sent at a time (the cursor moves per batch)
    timeout: Annotated[float, Field(ge=0.1, le=120)] = 10.0  # one attempt (connect, send, acknowledged)
    lease: Annotated[float, Field(ge=0.5, le=3600)] = 60.0  # a silent exporter's sink is another node's after this
    backoff: Annotated[float, Field(ge=0.05, le=3600)] = 1.0  # wait after the first failure (then doubled)
    max_backoff: Annotated[float, Field(ge=0.05, le=86400)] = 300.0  # the longest wait between attempts

    @model_validator(mode="after")
    def _lease_outlives_attempt(self) -> ExportDelivery:
        if self.lease <= self.timeout:  # else a slow attempt could lose its sink to another node mid-way
            raise ValueError("lease must be longer than timeout")
        return self


AnySink = FileSink | SyslogSink | JournalSink


class AuditExportModel(StrictModel):
    file: list[FileSink] = []
    syslog: list[SyslogSink] = []
    journal: list[JournalSink] = []
    delivery: ExportDelivery = ExportDelivery()

    def sinks(self) -> list[AnySink]:
        return [*self.file, *self.syslog, *self.journal]

    def sink(self, name: str) -> AnySink | None:
        return next((s for s in self.sinks() if s.name == name), None)


def kind_of(sink: Sink) -> str:
    """``file``, ``syslog`` or ``journal``: the key of the list the sink is in."""
    return {FileSink: "file", SyslogSink: "syslog", JournalSink: "journal"}[type(sink)]


def export_problems(cfg: Config) -> Iterator[tuple[Loc, str]]:
    """What the schema cannot see: names are unique across sinks (each has one cursor), two file sinks do not
    write one file, and a file sink's directory exists."""
    x = cfg.audit.export
    names: set[str] = set()
    paths: set[str] = set()
    for kind, sinks in (("file", x.file), ("syslog", x.syslog), ("journal", x.journal)):
        for i, s in enumerate(sinks):
            loc: Loc = ("audit", "export", kind, i)
            if s.name in names:
                yield (*loc, "name"), f"sink name {s.name!r} is used twice"
            names.add(s.name)
            if isinstance(s, FileSink):
                p = cfg.resolve(s.path)
                if str(p) in paths:
                    yield (*loc, "path"), f"{p} is written by another file sink"
                paths.add(str(p))
                if not p.parent.is_dir() and p.parent != cfg.log_dir:  # log_dir is made at start
                    yield (*loc, "path"), f"no directory {p.parent}"
                elif p.is_dir():
                    yield (*loc, "path"), f"{p} is a directory"
