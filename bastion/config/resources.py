"""The resources the bastion brokers access to (``resources:``): SSH hosts, PostgreSQL databases, Kubernetes API
servers. Each kind is a model tagged by ``kind:``; :data:`Resource` is their discriminated union and
:data:`KIND_TAGS` the tags read back from it, so error reporting never needs its own list of kinds."""

from __future__ import annotations

import re
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, Field, model_validator

from bastion.config.base import StrictModel, TimeLimits


def _host_name(v: str) -> str:
    """A host is dialled and shown in menus and logs: a host name or an IP address, nothing else."""
    if not re.fullmatch(r"[A-Za-z0-9.:_\[\]-]{1,253}", v):
        raise ValueError("must be a host name or an IP address")
    return v


HostName = Annotated[str, AfterValidator(_host_name)]

# the first words of ``ssh bastion WORD ...`` that are commands, not resources: a resource of that name could never
# be opened that way (``ssh bastion review`` lists requests), so the config refuses it
RESERVED_NAMES = frozenset({"review", "approve", "deny", "observe", "help"})


class SshCredential(StrictModel):
    private_key_file: str


class TransfersModel(StrictModel):
    """File transfers (sftp, scp, rsync, git): with ``archive`` the contents of each uploaded and downloaded file
    are kept by their SHA-256 beside the recordings, up to ``max_archive_bytes`` per file."""

    archive: bool = False
    max_archive_bytes: Annotated[int, Field(ge=0)] = 100 * 1024 * 1024


class ModeratorsModel(StrictModel):
    """Moderated sessions: ``count`` people of these ``roles`` (never the operator) must watch the session live.
    It opens only once they observe it, its input pauses when they are fewer, and it ends after the resource's
    ``moderator_grace`` without them."""

    roles: Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(min_length=1)]
    count: Annotated[int, Field(ge=1, le=10)] = 1


class ResourceBase(TimeLimits):
    """What every kind of resource may say: its time limits, and whether its sessions need a moderator."""

    moderators: ModeratorsModel | None = None
    # without enough moderators watching, input pauses; after this many seconds the session ends
    moderator_grace: Annotated[float, Field(ge=1, le=3600)] = 60.0
    # how long a session waits for its first moderators before it gives up (the operator may withdraw sooner)
    moderator_wait: Annotated[float, Field(ge=5, le=86400)] = 900.0


class SshResource(ResourceBase):
    kind: Literal["ssh"]
    description: str = ""
    policy: str | None = None
    host: HostName
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    user: Annotated[str, Field(min_length=1, max_length=64)]
    credential: SshCredential
    host_key: str
    transfers: TransfersModel | None = None  # default: the top-level ``transfers``
    # ports on the target's loopback that ``ssh -L`` may reach through the bastion (each connection audited)
    forwarding: list[Annotated[int, Field(ge=1, le=65535)]] = []
    # guard: every program a session executes is judged on the target by bastion-guard (docs/guard.md); filter:
    # the typed lines of an interactive shell are judged (a script, an alias or awk system() is not seen)
    enforce: Literal["filter", "guard"] = "filter"
    guard_path: Annotated[str, Field(pattern=r"^/[A-Za-z0-9._/+-]{1,250}$")] = "/usr/local/bin/bastion-guard"


class PgCredential(StrictModel):
    password_file: str


class PgTls(StrictModel):
    mode: Literal["disable", "require", "verify-full"] = "verify-full"
    ca_file: str | None = None


class MaskModel(StrictModel):
    table: Annotated[str, Field(min_length=1, max_length=127)]
    column: Annotated[str, Field(min_length=1, max_length=63)]
    style: Literal["full", "keep_last", "hash"] = "full"
    keep: Annotated[int, Field(ge=0, le=64)] = 4
    # deny: a masked column in WHERE, JOIN, ORDER BY, GROUP BY or a comparison is refused (its answers would
    # reveal the value bit by bit); allow: permitted, an oracle the admin chose to open
    predicates: Literal["deny", "allow"] = "deny"


class PgResource(ResourceBase):
    kind: Literal["postgres"]
    description: str = ""
    policy: str | None = None
    host: HostName
    port: Annotated[int, Field(ge=1, le=65535)] = 5432
    database: Annotated[str, Field(min_length=1, max_length=63)]
    user: Annotated[str, Field(min_length=1, max_length=63)]
    credential: PgCredential
    tls: PgTls = PgTls()
    masking: list[MaskModel] = []
    restrict: bool = False  # interactive psql in \restrict mode: no meta-commands at all


class KubeCredential(StrictModel):
    token_file: str | None = None        # a bearer token
    client_cert_file: str | None = None  # or a client certificate and its key
    client_key_file: str | None = None

    @model_validator(mode="after")
    def _one(self) -> KubeCredential:
        """Exactly one way to authenticate, so it is never ambiguous which one the bastion presents."""
        cert = self.client_cert_file is not None or self.client_key_file is not None
        if (self.token_file is None) == (not cert):
            raise ValueError("give token_file, or client_cert_file with client_key_file (one of the two)")
        if cert and (self.client_cert_file is None or self.client_key_file is None):
            raise ValueError("client_cert_file and client_key_file go together")
        return self


class KubeResource(ResourceBase):
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


AnyResource = SshResource | PgResource | KubeResource
"""A loaded resource, whatever its kind."""

Resource = Annotated[AnyResource, Field(discriminator="kind")]
"""How ``resources.NAME`` is validated: ``kind:`` picks the model (and pydantic puts the tag in error locations)."""


def _kind_tags() -> tuple[str, ...]:
    """The ``kind:`` tags of :data:`Resource`, read from the union itself so that adding a kind updates them."""
    union = get_args(Resource)[0]
    return tuple(tag for model in get_args(union) for tag in get_args(model.model_fields["kind"].annotation))


KIND_TAGS = _kind_tags()
KINDS = ", ".join(KIND_TAGS)
