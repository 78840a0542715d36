"""``notify:``: where the bastion tells reviewers and admins what happened (webhooks, Slack, email), and how hard
it tries. The models check the shape; :func:`notify_problems` checks what needs the rest of the config or the
disk (roles that exist, secret files that can be read), so both report ``FILE:LINE: key: message``.

A secret (webhook signing secret, a Slack URL's token, an SMTP password) is only ever named by a file: the config
file is read by more people and tools than the secrets are, and a value on argv or in a log is a value leaked.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Literal, get_args
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, model_validator

from bastion.config.base import NAME_RE, StrictModel
from bastion.config.problems import Loc

if TYPE_CHECKING:
    from bastion.config.schema import Config

EventName = Literal["request.created", "request.decided", "request.expired", "request.withdrawn",
                    "request.cancelled", "access.granted", "access.revoked", "session.terminated",
                    "moderation.needed", "command.blocked"]
EVENTS: tuple[EventName, ...] = get_args(EventName)
"""Every event a target can be sent. ``command.blocked`` is opt-in (it can be frequent)."""

DEFAULT_EVENTS: tuple[EventName, ...] = tuple(e for e in EVENTS if e != "command.blocked")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _http_url(v: str) -> str:
    """Command texts travel in the body: plain HTTP only to this machine's loopback (a local relay or a test)."""
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ValueError("must be https:// (plain http only to a loopback address)")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials (use secret_file / url_file)")
    return v


HttpUrl = Annotated[str, AfterValidator(_http_url)]


class Route(StrictModel):
    """Which events a target is sent: by name, and optionally only for some reviewer roles or resources."""

    name: Annotated[str, Field(pattern=NAME_RE)]
    events: list[EventName] = list(DEFAULT_EVENTS)
    # only events whose reviewers are in one of these roles (the request's approver roles, or the roles that
    # review its resource); empty: any
    roles: list[Annotated[str, Field(pattern=NAME_RE)]] = []
    resources: list[Annotated[str, Field(min_length=1, max_length=255)]] = []  # names or globs; empty: any


class UrlTarget(Route):
    """An HTTP target: the URL inline, or in a file when it is itself a secret (a Slack webhook's is)."""

    url: HttpUrl | None = None
    url_file: str | None = None

    @model_validator(mode="after")
    def _one_url(self) -> UrlTarget:
        if (self.url is None) == (self.url_file is None):
            raise ValueError("give exactly one of url and url_file")
        return self


class WebhookTarget(UrlTarget):
    """A generic webhook: the JSON event, signed with HMAC-SHA256 over ``TIMESTAMP.BODY`` (docs/notifications.md)."""

    secret_file: str


class SlackTarget(UrlTarget):
    """A Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat): blocks, no secret values."""


class Smtp(StrictModel):
    host: Annotated[str, Field(min_length=1, max_length=253)]
    port: Annotated[int, Field(ge=1, le=65535)] = 587
    starttls: bool = True  # refuse to send when the server offers no STARTTLS
    ca_file: str | None = None  # trust this CA for the server's certificate (default: the system's)
    username: Annotated[str, Field(min_length=1, max_length=320)] | None = None  # with password_file
    password_file: str | None = None

    @model_validator(mode="after")
    def _credentials(self) -> Smtp:
        if (self.username is None) != (self.password_file is None):
            raise ValueError("give both username and password_file, or neither")
        return self


class EmailTarget(Route):
    smtp: Smtp
    sender: Annotated[str, Field(pattern=r"^[^@\s<>]+@[^@\s<>]+$")]
    to: list[Annotated[str, Field(pattern=r"^[^@\s<>,]+@[^@\s<>,]+$")]] = Field(min_length=1)


class Delivery(StrictModel):
    """How hard the bastion tries. Every time is in seconds; the small lower bounds are for tests."""

    poll: Annotated[float, Field(ge=0.05, le=60)] = 2.0  # how often a node looks for due deliveries
    timeout: Annotated[float, Field(ge=0.1, le=120)] = 10.0  # one attempt (HTTP request, SMTP dialogue)
    lease: Annotated[float, Field(ge=0.5, le=3600)] = 120.0  # a claimed delivery is another node's after this
    backoff: Annotated[float, Field(ge=0.05, le=3600)] = 5.0  # wait after the first failure (then doubled)
    max_backoff: Annotated[float, Field(ge=0.05, le=86400)] = 600.0  # the longest wait between attempts
    max_age: Annotated[float, Field(ge=1, le=30 * 86400)] = 86400.0  # then it is given up: failed
    keep_days: Annotated[float, Field(ge=0.01, le=3650)] = 30.0  # delivered and failed rows are pruned after this

    @model_validator(mode="after")
    def _lease_outlives_attempt(self) -> Delivery:
        if self.lease <= self.timeout:  # else a slow attempt could be claimed again while it still runs
            raise ValueError("lease must be longer than timeout")
        return self


class NotifyModel(StrictModel):
    # what reviewers type after ``ssh -t`` to reach this bastion (hints: ``ssh -t SERVER review N``); default:
    # ``bastion``, with ``-p PORT`` when it does not listen on 22
    server: Annotated[str, Field(min_length=1, max_length=300, pattern=r"^[A-Za-z0-9@._:\[\] -]+$")] | None = None
    webhook: list[WebhookTarget] = []
    slack: list[SlackTarget] = []
    email: list[EmailTarget] = []
    delivery: Delivery = Delivery()

    def targets(self) -> list[WebhookTarget | SlackTarget | EmailTarget]:
        return [*self.webhook, *self.slack, *self.email]

    def target(self, name: str) -> WebhookTarget | SlackTarget | EmailTarget | None:
        return next((t for t in self.targets() if t.name == name), None)


def kind_of(target: Route) -> str:
    """``webhook``, ``slack`` or ``email``: the key of the list the target is in."""
    return {WebhookTarget: "webhook", SlackTarget: "slack", EmailTarget: "email"}[type(target)]


def _read_secret(cfg: Config, loc: Loc, name: str) -> Iterator[tuple[Loc, str]]:
    p = cfg.resolve(name)
    try:
        if not p.read_text().strip():
            yield loc, f"{p} is empty"
    except (OSError, UnicodeDecodeError) as e:
        yield loc, f"cannot read {p}: {getattr(e, 'strerror', None) or e}"


def notify_problems(cfg: Config) -> Iterator[tuple[Loc, str]]:
    """What the schema cannot see: routed roles exist, secret files can be read (and a URL in a file is one)."""
    n = cfg.notify
    seen: set[str] = set()
    for kind, targets in (("webhook", n.webhook), ("slack", n.slack), ("email", n.email)):
        for i, t in enumerate(targets):
            loc: Loc = ("notify", kind, i)
            if t.name in seen:  # `bastion notify status` and the outbox know a target by its name alone
                yield (*loc, "name"), f"target name {t.name!r} is used twice"
            seen.add(t.name)
            for j, role in enumerate(t.roles):
                if role not in cfg.roles:
                    yield (*loc, "roles", j), f"no role {role!r} (roles: {', '.join(sorted(cfg.roles)) or 'none'})"
            if isinstance(t, WebhookTarget):
                yield from _read_secret(cfg, (*loc, "secret_file"), t.secret_file)
            if isinstance(t, UrlTarget) and t.url_file is not None:
                problems = list(_read_secret(cfg, (*loc, "url_file"), t.url_file))
                if not problems:
                    try:
                        _http_url(cfg.resolve(t.url_file).read_text().strip())
                    except ValueError as e:
                        problems.append(((*loc, "url_file"), f"the URL in it {e}"))
                yield from problems
            if isinstance(t, EmailTarget):
                if t.smtp.password_file is not None:
                    yield from _read_secret(cfg, (*loc, "smtp", "password_file"), t.smtp.password_file)
                if t.smtp.ca_file is not None and not cfg.resolve(t.smtp.ca_file).is_file():
                    yield (*loc, "smtp", "ca_file"), f"no file {cfg.resolve(t.smtp.ca_file)}"
