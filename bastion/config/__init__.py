"""Load and validate the bastion's single YAML config file.

Every error names the file, the line and the key (``bastion.yaml:12: resources.db.port: ...``). The schema is
expressed with pydantic models (``extra="forbid"`` so typos are errors); a line map built from the YAML node tree
turns pydantic's error locations back into line numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from policies.engine import Action, PolicySet, Rule
from recorder.storage import RecordingStorage, S3Settings

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
GROUP_RE = r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$"


class ConfigError(Exception):
    """A config problem; ``str()`` is ``FILE:LINE: key: message`` (one line per problem)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listen(_Model):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 2222


class _TimeLimits(_Model):
    """Session time limits: the daemon's (``limits``), or a resource's own, which win while a session on it is open.
    """

    # no input on a connection with a terminal (the menu, an interactive session) for this long closes it
    idle_timeout: Annotated[float, Field(ge=5, le=7 * 86400)] | None = None
    # a brokered session (any form) is closed when it has lasted this long
    max_session_duration: Annotated[float, Field(ge=5, le=30 * 86400)] | None = None


class Limits(_TimeLimits):
    login_timeout: Annotated[float, Field(gt=0, le=3600)] = 120.0
    max_connections: Annotated[int, Field(ge=1, le=100000)] = 500
    max_connections_per_source: Annotated[int, Field(ge=1, le=100000)] = 50
    max_sessions_per_connection: Annotated[int, Field(ge=1, le=100)] = 4
    target_connect_timeout: Annotated[float, Field(gt=0, le=300)] = 15.0


class S3Model(_Model):
    bucket: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    prefix: Annotated[str, Field(pattern=r"^([A-Za-z0-9._=-]+/)*$")] = ""  # e.g. "prod/": keys are PREFIX/aa/bb/...
    endpoint_url: Annotated[str, Field(pattern=r"^https?://")] | None = None  # an S3-compatible server
    region: str | None = None
    access_key_id: str | None = None  # with secret_access_key_file; neither: boto3's chain (env, instance role)
    secret_access_key_file: str | None = None
    cache_max_mb: Annotated[int, Field(ge=0)] = 2048  # downloaded copies kept for replays (least recently used go)


class RecordingsModel(_Model):
    retention_days: Annotated[float, Field(gt=0, le=36500)] | None = None  # none: keep recordings forever
    s3: S3Model | None = None  # closed recordings are uploaded here (default: they stay in recordings_dir)


class ClusterModel(_Model):
    node_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,255}$")] | None = None  # default: host:port
    heartbeat_seconds: Annotated[float, Field(gt=0, le=3600)] = 10.0
    node_expiry_seconds: Annotated[float, Field(gt=0, le=86400)] = 60.0  # silent this long: sessions interrupted


class AuditModel(_Model):
    signing_key_file: str | None = None  # ed25519 private key: the daemon signs the chain heads after each session


class SandboxModel(_Model):
    mode: Literal["auto", "required", "off"] = "auto"  # auto: bubblewrap when installed
    user: Annotated[str, Field(min_length=1, max_length=32)] = "nobody"  # session processes run as this user


class OidcModel(_Model):
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


class LocalUser(_Model):
    groups: list[Annotated[str, Field(pattern=GROUP_RE)]] = []
    authorized_keys: list[str] = []
    authorized_keys_file: str | None = None
    disabled: bool = False


class SshCredential(_Model):
    private_key_file: str


class Approvers(_Model):
    roles: list[Annotated[str, Field(pattern=NAME_RE)]] = []
    count: Annotated[int, Field(ge=1, le=10)] = 1


class RuleModel(_Model):
    name: Annotated[str, Field(pattern=NAME_RE)]
    action: Literal["allow", "warn", "require_approval", "block"]
    programs: list[str] = []
    args: list[str] = []
    command: str | None = None
    groups: list[str] = []
    resources: list[str] = []
    reason: Annotated[str, Field(max_length=300)] = ""
    approvers: Approvers | None = None
    timeout: Annotated[float, Field(gt=0, le=86400)] = 600.0
    statements: list[str] = []   # SQL: statement kinds (select, delete, drop, copy, set_role, ...)
    tables: list[str] = []       # SQL: tables referenced (globs; qualified or not)
    traits: list[Literal["no_where", "copy_program", "copy_file", "copy_from", "copy_to", "dynamic", "privilege",
                         "rule", "set_role", "dangerous_function", "plants_code"]] = []
    # SQL writes: run the statement with a limit on the rows it touches; over it, the rule's action applies
    # (block, or hold: once approved the exact text runs again without the limit)
    max_rows: Annotated[int, Field(ge=0)] | None = None
    functions: list[str] = []    # SQL: functions called (globs)
    verbs: list[Literal["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "post",
                        "put", "*"]] = []  # Kubernetes (RBAC verbs; exec/attach/portforward/proxy are create)
    api_resources: list[Annotated[str, Field(pattern=r"^[a-z0-9*][a-z0-9.*-]*(/[a-z0-9*]+)?$")]] = []
    api_groups: list[str] = []   # Kubernetes: "" is the core group
    namespaces: list[str] = []   # Kubernetes: globs
    names: list[str] = []        # Kubernetes: object names (globs)
    paths: list[str] = []        # Kubernetes: non-resource URLs (globs), e.g. /metrics

    @model_validator(mode="after")
    def _max_rows(self) -> RuleModel:
        if self.max_rows is not None:
            if self.action not in ("block", "require_approval"):
                raise ValueError("max_rows needs action block or require_approval (what happens over the limit)")
            if not self.statements or set(self.statements) - {"insert", "update", "delete", "merge"}:
                raise ValueError("max_rows applies to statements: [insert, update, delete, merge] (some of them)")
        return self

    @model_validator(mode="after")
    def _one_kind(self) -> RuleModel:
        kinds = [k for k, on in (("shell (programs/args)", self.programs or self.args),
                                 ("SQL (statements/tables/traits/functions)",
                                  self.statements or self.tables or self.traits or self.functions),
                                 ("Kubernetes (verbs/api_resources/api_groups/namespaces/names/paths)",
                                  self.verbs or self.api_resources or self.api_groups or self.namespaces
                                  or self.names or self.paths)) if on]
        if len(kinds) > 1:
            raise ValueError(f"a rule matches one kind of command; this one mixes {' and '.join(kinds)}")
        return self

    @field_validator("command")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"not a valid regular expression: {e}") from None
        return v


class PolicyModel(_Model):
    default: Literal["allow", "warn", "require_approval", "block"] = "allow"
    rules: list[RuleModel] = []


class SshResource(_TimeLimits):
    kind: Literal["ssh"]
    description: str = ""
    policy: str | None = None
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    user: Annotated[str, Field(min_length=1, max_length=64)]
    credential: SshCredential
    host_key: str

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9.:_\[\]-]{1,253}", v):
            raise ValueError("must be a host name or an IP address")
        return v


class PgCredential(_Model):
    password_file: str


class PgTls(_Model):
    mode: Literal["disable", "require", "verify-full"] = "verify-full"
    ca_file: str | None = None


class MaskModel(_Model):
    table: Annotated[str, Field(min_length=1, max_length=127)]
    column: Annotated[str, Field(min_length=1, max_length=63)]
    style: Literal["full", "keep_last", "hash"] = "full"
    keep: Annotated[int, Field(ge=0, le=64)] = 4
    # deny: a masked column in WHERE, JOIN, ORDER BY, GROUP BY or a comparison is refused (its answers would
    # reveal the value bit by bit); allow: permitted, an oracle the admin chose to open
    predicates: Literal["deny", "allow"] = "deny"


class PgResource(_TimeLimits):
    kind: Literal["postgres"]
    description: str = ""
    policy: str | None = None
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 5432
    database: Annotated[str, Field(min_length=1, max_length=63)]
    user: Annotated[str, Field(min_length=1, max_length=63)]
    credential: PgCredential
    tls: PgTls = PgTls()
    masking: list[MaskModel] = []
    restrict: bool = False  # interactive psql in \restrict mode: no meta-commands at all

    _host = field_validator("host")(SshResource._host.__func__)  # type: ignore[attr-defined]


class KubeCredential(_Model):
    token_file: str | None = None        # a bearer token
    client_cert_file: str | None = None  # or a client certificate and its key
    client_key_file: str | None = None

    @model_validator(mode="after")
    def _one(self) -> KubeCredential:
        cert = self.client_cert_file is not None or self.client_key_file is not None
        if (self.token_file is None) == (not cert):
            raise ValueError("give token_file, or client_cert_file with client_key_file (one of the two)")
        if cert and (self.client_cert_file is None or self.client_key_file is None):
            raise ValueError("client_cert_file and client_key_file go together")
        return self


class KubeResource(_TimeLimits):
    kind: Literal["kubernetes"]
    description: str = ""
    policy: str | None = None
    server: Annotated[str, Field(pattern=r"^https://[A-Za-z0-9.:_\[\]-]{1,253}(:[0-9]{1,5})?/?$")]
    ca_file: str | None = None           # the API server's CA; none: the system trust store
    credential: KubeCredential
    namespace: Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")] = "default"
    impersonate: bool = False            # act as the operator (Impersonate-User/-Group): cluster RBAC applies too
    port_forward: bool = False           # kubectl port-forward, allowed or refused as a whole
    simulated: bool = False              # the demo's simulated API server: labelled as such in the menu


Resource = Annotated[SshResource | PgResource | KubeResource, Field(discriminator="kind")]
KINDS = "ssh, postgres, kubernetes"


class Role(_Model):
    groups: list[Annotated[str, Field(pattern=GROUP_RE)]] = Field(min_length=1)
    resources: list[str] = []
    review: bool | list[str] = False  # true = requests on every resource; or globs of resources
    audit: bool = False
    request: list[str] = []  # resources (names or globs) its members may ask for: a reviewer of one grants it
    request_ttl: Annotated[float, Field(ge=60, le=30 * 86400)] = 3600.0  # how long granted access lasts
    request_approvals: Annotated[int, Field(ge=1, le=10)] = 1  # distinct reviewers needed to grant it

    def reviews(self, resource: str) -> bool:
        """Whether this role decides approval requests on ``resource``."""
        import fnmatch

        pats = ["*"] if self.review is True else (self.review or [])
        return any(fnmatch.fnmatchcase(resource, p) for p in pats)


class _Schema(_Model):
    listen: Listen = Listen()
    host_keys: list[str] = Field(min_length=1)
    database: str = "sqlite:///bastion.db"
    recordings_dir: str = "recordings"
    recordings: RecordingsModel = RecordingsModel()
    audit: AuditModel = AuditModel()
    cluster: ClusterModel = ClusterModel()
    log_dir: str | None = None
    limits: Limits = Limits()
    sandbox: SandboxModel = SandboxModel()
    oidc: OidcModel | None = None
    kubectl: str | None = None  # the kubectl binary for kubernetes resources (default: found on PATH)
    users: dict[Annotated[str, Field(pattern=NAME_RE)], LocalUser] = {}
    resources: dict[Annotated[str, Field(pattern=NAME_RE)], Resource] = {}
    roles: dict[Annotated[str, Field(pattern=NAME_RE)], Role] = {}
    policies: dict[Annotated[str, Field(pattern=NAME_RE)], PolicyModel] = {}


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
    resources: dict[str, SshResource | PgResource | KubeResource]
    roles: dict[str, Role]
    policies: dict[str, PolicySet] = field(default_factory=dict)
    sandbox: SandboxModel = field(default_factory=SandboxModel)
    oidc: OidcModel | None = None
    kubectl: str | None = None
    recordings: RecordingsModel = field(default_factory=RecordingsModel)
    audit: AuditModel = field(default_factory=AuditModel)
    cluster: ClusterModel = field(default_factory=ClusterModel)
    lines: dict[tuple[Any, ...], int] = field(default_factory=dict, repr=False)

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

    def resolve(self, p: str) -> Path:
        """Resolve a path from the config relative to the config file's directory."""
        return _resolve(self.path, p)

    def line_of(self, *key: Any) -> int:
        """The line of ``key`` (or its nearest ancestor) in the config file."""
        return _line_for(self.lines, key)


def _resolve(cfg_path: Path, p: str) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else (cfg_path.parent / path).resolve()


class _Loader(yaml.SafeLoader):
    """SafeLoader; we also walk its node tree for line numbers."""


def _line_map(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int], dups: list[str]) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else str(k.start_mark)
            sub = (*path, key)
            if key in seen:
                dups.append(f"{k.start_mark.line + 1}\x00{_dotted(sub)}: duplicate key")
            seen.add(key)
            out[sub] = k.start_mark.line + 1
            _line_map(v, sub, out, dups)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = (*path, i)
            out[sub] = item.start_mark.line + 1
            _line_map(item, sub, out, dups)


def _dotted(loc: Iterable[Any]) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        else:
            parts.append(("." if parts else "") + str(p))
    return "".join(parts) or "(top level)"


def _line_for(lines: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return 1


def _parse_yaml(path: Path, text: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as e:  # a control character: YAML refuses the whole stream
        line = text[:max(0, e.position)].count("\n") + 1
        raise ConfigError([f"{path}:{line}: invalid YAML: character {e.character:#04x} is not allowed"]) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return {}, {(): 1}
        lines: dict[tuple[Any, ...], int] = {}
        dups: list[str] = []
        _line_map(node, (), lines, dups)
        if dups:
            raise ConfigError([f"{path}:{d.replace(chr(0), ': ', 1)}" for d in dups])
        return loader.construct_document(node), lines
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        raise ConfigError([f"{path}:{line}: invalid YAML: {e.problem or e.context}"]) from None
    except (yaml.YAMLError, RecursionError) as e:  # anything else the parser refuses (deep nesting, ...)
        raise ConfigError([f"{path}:1: invalid YAML: {str(e).splitlines()[0] if str(e) else type(e).__name__}"]) \
            from None
    finally:
        loader.dispose()


def _pydantic_problems(path: Path, err: ValidationError, lines: dict[tuple[Any, ...], int]) -> list[str]:
    problems = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if p not in ("ssh", "postgres"))  # drop discriminator tags
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] == "union_tag_invalid":
            loc = (*loc, "kind")
            msg = f"unknown kind {e.get('input', {}).get('kind')!r} (known kinds: {KINDS})"
        elif e["type"] == "union_tag_not_found":
            msg = f"missing 'kind' (known kinds: {KINDS})"
        problems.append(f"{path}:{_line_for(lines, loc)}: {_dotted(loc)}: {msg}")
    return problems


def _semantic_checks(cfg: Config) -> list[str]:
    """Checks beyond the schema: referenced files exist and parse, keys parse, roles reference known things."""
    import asyncssh  # local: keeps `policies`/tests that only need the schema light

    problems: list[str] = []

    def bad(loc: tuple[Any, ...], msg: str) -> None:
        problems.append(f"{cfg.path}:{cfg.line_of(*loc)}: {_dotted(loc)}: {msg}")

    for name, user in cfg.users.items():
        for i, line in enumerate(user.authorized_keys):
            try:
                asyncssh.import_authorized_keys(line)
            except (ValueError, asyncssh.KeyImportError) as e:
                bad(("users", name, "authorized_keys", i), f"not a valid public key line ({e})")
        if user.authorized_keys_file:
            p = cfg.resolve(user.authorized_keys_file)
            try:
                asyncssh.read_authorized_keys(str(p))
            except (OSError, ValueError, asyncssh.KeyImportError) as e:
                bad(("users", name, "authorized_keys_file"), f"cannot read authorized keys from {p}: {e}")
    for name, res in cfg.resources.items():
        if isinstance(res, PgResource):
            pw = cfg.resolve(res.credential.password_file)
            try:
                if not pw.read_text().strip():
                    bad(("resources", name, "credential", "password_file"), f"{pw} is empty")
            except (OSError, UnicodeDecodeError) as e:
                bad(("resources", name, "credential", "password_file"), f"cannot read {pw}: {e}")
            if res.tls.mode == "verify-full" and not (res.tls.ca_file and cfg.resolve(res.tls.ca_file).is_file()):
                bad(("resources", name, "tls"), "verify-full needs ca_file, a readable CA certificate file")
            continue
        if isinstance(res, KubeResource):
            c = res.credential
            for field_name in ("token_file", "client_cert_file", "client_key_file"):
                fp = getattr(c, field_name)
                if fp is None:
                    continue
                try:
                    if not cfg.resolve(fp).read_text().strip():
                        bad(("resources", name, "credential", field_name), f"{cfg.resolve(fp)} is empty")
                except (OSError, UnicodeDecodeError) as e:
                    bad(("resources", name, "credential", field_name), f"cannot read {cfg.resolve(fp)}: {e}")
            if res.ca_file and not cfg.resolve(res.ca_file).is_file():
                bad(("resources", name, "ca_file"), f"{cfg.resolve(res.ca_file)} is not a readable file")
            continue
        key_path = cfg.resolve(res.credential.private_key_file)
        try:
            asyncssh.read_private_key(str(key_path))
        except (OSError, ValueError, asyncssh.KeyImportError) as e:
            bad(("resources", name, "credential", "private_key_file"), f"cannot load private key {key_path}: {e}")
        try:
            asyncssh.import_public_key(res.host_key)
        except (ValueError, asyncssh.KeyImportError) as e:
            bad(("resources", name, "host_key"), f"not a valid public host key ({e})")
    from bastion.sandbox import SandboxError, make_sandbox

    def secret_file(loc: tuple[Any, ...], name: str) -> None:
        sp = cfg.resolve(name)
        try:
            if not sp.read_text().strip():
                bad(loc, f"{sp} is empty")
        except (OSError, UnicodeDecodeError) as e:
            bad(loc, f"cannot read {sp}: {e}")

    if cfg.oidc is not None and cfg.oidc.client_secret_file:
        secret_file(("oidc", "client_secret_file"), cfg.oidc.client_secret_file)
    s3 = cfg.recordings.s3
    if s3 is not None:
        if bool(s3.access_key_id) != bool(s3.secret_access_key_file):
            bad(("recordings", "s3"), "give access_key_id and secret_access_key_file together (or neither, for "
                "boto3's own credentials: environment, instance role)")
        if s3.secret_access_key_file:
            secret_file(("recordings", "s3", "secret_access_key_file"), s3.secret_access_key_file)
        try:
            import boto3  # noqa: F401
        except ImportError:
            bad(("recordings", "s3"), "S3 storage needs boto3: pip install 'bastion[s3]'")
    if cfg.oidc is not None and "openid" not in cfg.oidc.scopes:
        bad(("oidc", "scopes"), "must include openid")

    if any(isinstance(r, KubeResource) for r in cfg.resources.values()):
        from bastion.sandbox import find_kubectl

        if find_kubectl(cfg.kubectl) is None:
            where = ("kubectl",) if cfg.kubectl else ("resources",)
            bad(where, f"kubernetes resources need kubectl: {cfg.kubectl or 'none on PATH'} is not an executable")
    if cfg.signing_key is not None:
        from bastion.store.verify import load_private_key

        try:
            load_private_key(cfg.signing_key)
        except (OSError, ValueError) as e:
            bad(("audit", "signing_key_file"), str(e))
    try:
        make_sandbox(cfg.sandbox.mode, cfg.sandbox.user)
    except SandboxError as e:
        bad(("sandbox",), str(e))
    import fnmatch

    for name, res in cfg.resources.items():
        if res.policy is not None and res.policy not in cfg.policies:
            bad(("resources", name, "policy"), f"no policy named {res.policy!r} (defined: "
                f"{', '.join(sorted(cfg.policies)) or 'none'})")
    reviewer_roles = {n for n, r in cfg.roles.items() if r.review}
    for pname, pset in cfg.policies.items():
        for i, rule in enumerate(pset.rules):
            for role in rule.approver_roles:
                if role not in reviewer_roles:
                    bad(("policies", pname, "rules", i, "approvers", "roles"),
                        f"{role!r} is not a role with review rights")
    for rname, role in cfg.roles.items():
        for i, pat in enumerate(role.resources):
            if not any(fnmatch.fnmatchcase(r, pat) for r in cfg.resources):
                bad(("roles", rname, "resources", i), f"{pat!r} matches no resource")
        for i, pat in enumerate(role.request):
            if not any(fnmatch.fnmatchcase(r, pat) for r in cfg.resources):
                bad(("roles", rname, "request", i), f"{pat!r} matches no resource")
            elif not any(other.reviews(r) for other in cfg.roles.values() for r in cfg.resources
                         if fnmatch.fnmatchcase(r, pat)):
                bad(("roles", rname, "request", i), f"no role reviews what {pat!r} matches: nobody could grant it")
    for i, hk in enumerate(cfg.host_keys):
        if hk.exists():
            try:
                asyncssh.read_private_key(str(hk))
            except (OSError, ValueError, asyncssh.KeyImportError) as e:
                bad(("host_keys", i), f"cannot load host key {hk}: {e}")
        elif not hk.parent.is_dir():
            bad(("host_keys", i), f"directory {hk.parent} does not exist (the key itself is created on first start)")
    if cfg.database_url.startswith("sqlite:///"):
        db_dir = Path(cfg.database_url[len("sqlite:///"):]).parent
        if not db_dir.is_dir():
            bad(("database",), f"directory {db_dir} does not exist")
    return problems


def _policy_set(name: str, p: PolicyModel) -> PolicySet:
    return PolicySet(name, Action.parse(p.default), tuple(
        Rule(r.name, Action.parse(r.action), tuple(r.programs), tuple(r.args),
             re.compile(r.command) if r.command else None, tuple(r.groups), tuple(r.resources), r.reason,
             tuple(r.approvers.roles) if r.approvers else (), r.approvers.count if r.approvers else 1, r.timeout,
             tuple(r.statements), tuple(t.lower() for t in r.tables), tuple(r.traits),
             tuple(f.lower() for f in r.functions), tuple(r.verbs), tuple(a.lower() for a in r.api_resources),
             tuple(r.api_groups), tuple(r.namespaces), tuple(r.names), tuple(r.paths), r.max_rows)
        for r in p.rules))


def load_config(path: str | Path, *, check_files: bool = True) -> Config:
    """Read, parse and validate a config file; raise :class:`ConfigError` listing every problem."""
    path = Path(path).resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([f"{path}:1: cannot read config: {e}"]) from None
    data, lines = _parse_yaml(path, text)
    if not isinstance(data, dict):
        raise ConfigError([f"{path}:1: (top level): must be a mapping of settings"])
    try:
        schema = _Schema.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_pydantic_problems(path, e, lines)) from None

    db = schema.database
    if db.startswith("sqlite:///") and not db.startswith("sqlite:////"):
        rel = db[len("sqlite:///"):]
        if rel and rel != ":memory:":
            db = "sqlite:///" + str(_resolve(path, rel))
    user_keys: dict[str, list[str]] = {}
    for name, u in schema.users.items():
        keys = list(u.authorized_keys)
        if u.authorized_keys_file:
            p = _resolve(path, u.authorized_keys_file)
            if p.exists():
                keys += [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        user_keys[name] = keys
    cfg = Config(
        path=path,
        listen=schema.listen,
        host_keys=[_resolve(path, p) for p in schema.host_keys],
        database_url=db,
        recordings_dir=_resolve(path, schema.recordings_dir),
        log_dir=_resolve(path, schema.log_dir) if schema.log_dir else None,
        limits=schema.limits,
        users=dict(schema.users),
        user_keys=user_keys,
        resources=dict(schema.resources),
        roles=dict(schema.roles),
        policies={n: _policy_set(n, p) for n, p in schema.policies.items()},
        sandbox=schema.sandbox,
        kubectl=str(_resolve(path, schema.kubectl)) if schema.kubectl else None,
        oidc=schema.oidc,
        recordings=schema.recordings,
        audit=schema.audit,
        cluster=schema.cluster,
        lines=lines,
    )
    if check_files:
        problems = _semantic_checks(cfg)
        if problems:
            raise ConfigError(problems)
    return cfg
