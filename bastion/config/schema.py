"""The config file's schema (every section but resources and policies, which have their own modules) and
:class:`Config`, the validated result the rest of the bastion reads.

The schema mirrors the YAML as written (paths as the admin typed them); :class:`Config` is what it means (paths
absolute, policies compiled for the engine), so no caller has to know where the file was.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from bastion.config.base import GROUP_RE, NAME_RE, StrictModel, TimeLimits
from bastion.config.export import AuditExportModel
from bastion.config.notify import NotifyModel
from bastion.config.problems import LineMap, line_for
from bastion.config.resources import AnyResource, Resource, TransfersModel
from bastion.config.rules import PolicyModel
from policies.engine import PolicySet
from recorder.storage import RecordingStorage, S3Settings


class Listen(StrictModel):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 2222


class Limits(TimeLimits):
    login_timeout: Annotated[float, Field(gt=0, le=3600)] = 120.0
    max_connections: Annotated[int, Field(ge=1, le=100000)] = 500
    max_connections_per_source: Annotated[int, Field(ge=1, le=100000)] = 50
    max_sessions_per_connection: Annotated[int, Field(ge=1, le=100)] = 4
    target_connect_timeout: Annotated[float, Field(gt=0, le=300)] = 15.0


class S3Model(StrictModel):
    bucket: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    prefix: Annotated[str, Field(pattern=r"^([A-Za-z0-9._=-]+/)*$")] = ""  # e.g. "prod/": keys are PREFIX/aa/bb/...
    endpoint_url: Annotated[str, Field(pattern=r"^https?://")] | None = None  # an S3-compatible server
    region: str | None = None
    access_key_id: str | None = None  # with secret_access_key_file; neither: boto3's chain (env, instance role)
    secret_access_key_file: str | None = None
    cache_max_mb: Annotated[int, Field(ge=0)] = 2048  # downloaded copies kept for replays (least recently used go)


class RecordingsModel(StrictModel):
    retention_days: Annotated[float, Field(gt=0, le=36500)] | None = None  # none: keep recordings forever
    s3: S3Model | None = None  # closed recordings are uploaded here (default: they stay in recordings_dir)


class ClusterModel(StrictModel):
    node_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,255}$")] | None = None  # default: host:port
    heartbeat_seconds: Annotated[float, Field(gt=0, le=3600)] = 10.0
    node_expiry_seconds: Annotated[float, Field(gt=0, le=86400)] = 60.0  # silent this long: sessions interrupted


class MetricsTls(StrictModel):
    cert_file: str
    key_file: str


class MetricsModel(StrictModel):
    """The Prometheus endpoint (``/metrics``, ``/healthz``, ``/readyz``); off unless the section is there."""

    listen: str = "127.0.0.1:9464"  # HOST:PORT ([v6]:PORT); keep it on loopback or a management network
    tls: MetricsTls | None = None  # HTTPS with this certificate and key
    token_file: str | None = None  # /metrics wants "Authorization: Bearer <the file's content>"

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        split_address(v)
        return v

    @property
    def address(self) -> tuple[str, int]:
        return split_address(self.listen)


def split_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port); ValueError saying what is wrong."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535 or any(c in host for c in " /[]"):
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:9464, [::1]:9464; port 1-65535)")
    return host, int(port)


class AuditModel(StrictModel):
    signing_key_file: str | None = None  # ed25519 private key: the daemon signs the chain heads after each session
    export: AuditExportModel = AuditExportModel()  # every audit event out: a file, syslog, the journal


class SandboxModel(StrictModel):
    mode: Literal["auto", "required", "off"] = "auto"  # auto: bubblewrap when installed
    user: Annotated[str, Field(min_length=1, max_length=32)] = "nobody"  # session processes run as this user


class OidcModel(StrictModel):
    issuer: Annotated[str, Field(pattern=r"^https?://")]
    client_id: Annotated[str, Field(min_length=1, max_length=255)]
    client_secret_file: str | None = None
    scopes: list[str] = ["openid", "profile", "email", "groups"]
    groups_claim: Annotated[str, Field(min_length=1, max_length=100)] = "groups"
    username_claim: Annotated[str, Field(min_length=1, max_length=100)] = "preferred_username"
    key_binding_ttl: Annotated[float, Field(ge=0, le=90 * 86400)] = 12 * 3600.0  # seconds; 0: never bind keys
    login_timeout: Annotated[float, Field(gt=0, le=3600)] = 600.0  # longest a device flow may take
    max_pending_per_source: Annotated[int, Field(ge=1, le=1000)] = 5
    algorithms: list[Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
                             "EdDSA"]] = ["RS256", "ES256", "PS256", "EdDSA"]
    leeway: Annotated[float, Field(ge=0, le=300)] = 60.0
    jwks_min_refresh: Annotated[float, Field(ge=0, le=3600)] = 30.0  # seconds between refetches on an unknown kid
    local_users: bool = True  # false: only OIDC logins (config users are refused)
    http_timeout: Annotated[float, Field(gt=0, le=120)] = 10.0


class LocalUser(StrictModel):
    groups: list[Annotated[str, Field(pattern=GROUP_RE)]] = []
    authorized_keys: list[str] = []
    authorized_keys_file: str | None = None
    disabled: bool = False


class Role(StrictModel):
    groups: list[Annotated[str, Field(pattern=GROUP_RE)]] = Field(min_length=1)
    resources: list[str] = []
    review: bool | list[str] = False  # true = requests on every resource; or globs of resources
    audit: bool = False
    request: list[str] = []  # resources (names or globs) its members may ask for: a reviewer of one grants it
    request_ttl: Annotated[float, Field(ge=60, le=30 * 86400)] = 3600.0  # how long granted access lasts
    request_approvals: Annotated[int, Field(ge=1, le=10)] = 1  # distinct reviewers needed to grant it

    def reviews(self, resource: str) -> bool:
        """Whether this role decides approval requests on ``resource``."""
        pats = ["*"] if self.review is True else (self.review or [])
        return any(fnmatch.fnmatchcase(resource, p) for p in pats)


class FileSchema(StrictModel):
    """The whole file, as written: the top-level keys and their defaults."""

    listen: Listen = Listen()
    host_keys: list[str] = Field(min_length=1)
    # signs the host certificates of ``ssh -J`` sessions (created on first start; ``bastion ca`` prints the line
    # for known_hosts); default: host_ca_ed25519 beside the first host key
    host_ca_key: str | None = None
    database: str = "sqlite:///bastion.db"
    recordings_dir: str = "recordings"
    recordings: RecordingsModel = RecordingsModel()
    transfers: TransfersModel = TransfersModel()
    audit: AuditModel = AuditModel()
    cluster: ClusterModel = ClusterModel()
    log_dir: str | None = None
    limits: Limits = Limits()
    sandbox: SandboxModel = SandboxModel()
    oidc: OidcModel | None = None
    notify: NotifyModel = NotifyModel()  # webhooks, Slack, email: who hears of requests, decisions, blocks
    kubectl: str | None = None  # the kubectl binary for kubernetes resources (default: found on PATH)
    # "per-connection": every SSH connection is served by a process of its own (forked from the daemon), so one
    # operator's bulk output never slows another's typing and the node uses every core; "one": all in one process
    processes: Literal["per-connection", "one"] = "per-connection"
    metrics: MetricsModel | None = None  # a Prometheus endpoint with health checks (off by default)
    log_format: Literal["text", "json"] = "text"  # json: one JSON object per log line (for log collectors)
    users: dict[Annotated[str, Field(pattern=NAME_RE)], LocalUser] = {}
    resources: dict[Annotated[str, Field(pattern=NAME_RE)], Resource] = {}
    roles: dict[Annotated[str, Field(pattern=NAME_RE)], Role] = {}
    policies: dict[Annotated[str, Field(pattern=NAME_RE)], PolicyModel] = {}


def resolve_path(cfg_path: Path, p: str) -> Path:
    """A path from the config, relative to the config file's directory (so the daemon's cwd never matters)."""
    path = Path(p).expanduser()
    return path if path.is_absolute() else (cfg_path.parent / path).resolve()


@dataclass(frozen=True)
class Config:
    """A validated config with every path made absolute (relative paths are relative to the file)."""

    path: Path
    listen: Listen
    host_keys: list[Path]
    database_url: str
    recordings_dir: Path
    log_dir: Path | None
    limits: Limits
    users: dict[str, LocalUser]
    user_keys: dict[str, list[str]]
    resources: dict[str, AnyResource]
    roles: dict[str, Role]
    policies: dict[str, PolicySet] = field(default_factory=dict)
    sandbox: SandboxModel = field(default_factory=SandboxModel)
    oidc: OidcModel | None = None
    kubectl: str | None = None
    recordings: RecordingsModel = field(default_factory=RecordingsModel)
    transfers: TransfersModel = field(default_factory=TransfersModel)
    audit: AuditModel = field(default_factory=AuditModel)
    cluster: ClusterModel = field(default_factory=ClusterModel)
    processes: str = "per-connection"
    host_ca_key: Path | None = None
    notify: NotifyModel = field(default_factory=NotifyModel)
    metrics: MetricsModel | None = None
    log_format: str = "text"
    lines: LineMap = field(default_factory=dict, repr=False)

    @property
    def signing_key(self) -> Path | None:
        """The ed25519 key that signs chain heads, if configured."""
        return self.resolve(self.audit.signing_key_file) if self.audit.signing_key_file else None

    def recording_storage(self) -> RecordingStorage:
        """Where closed recordings are kept: ``recordings_dir``, or the ``recordings.s3`` bucket."""
        s3 = self.recordings.s3
        if s3 is None:
            return RecordingStorage(self.recordings_dir)
        secret = None
        if s3.secret_access_key_file:
            secret = self.resolve(s3.secret_access_key_file).read_text().strip()
        return RecordingStorage(self.recordings_dir, S3Settings(
            s3.bucket, s3.prefix, s3.endpoint_url, s3.region, s3.access_key_id, secret, s3.cache_max_mb << 20))

    @property
    def host_ca(self) -> Path:
        """The host CA's key: ``host_ca_key``, or host_ca_ed25519 beside the first host key."""
        return self.host_ca_key or self.host_keys[0].parent / "host_ca_ed25519"

    def resolve(self, p: str) -> Path:
        """Resolve a path from the config relative to the config file's directory."""
        return resolve_path(self.path, p)

    def line_of(self, *key: Any) -> int:
        """The line of ``key`` (or its nearest ancestor) in the config file."""
        return line_for(self.lines, key)
