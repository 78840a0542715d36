"""Checks beyond the schema: referenced files exist and parse, keys parse, names refer to things that exist.

The schema can only say a value has the right shape; these say it will work when the daemon needs it (a password
file that is empty, a role that grants a resource nobody defined), so the admin hears about it at load time, with a
line, rather than from a failed session. Each check covers one config section and yields ``(key path, message)``;
:func:`semantic_checks` runs them in a fixed order and names each problem the usual way.
"""

from __future__ import annotations

import fnmatch
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncssh

from bastion.config.problems import Loc, problem
from bastion.config.resources import RESERVED_NAMES, KubeResource, PgResource, SshResource
from bastion.config.schema import Config
from bastion.sandbox import SandboxError, find_kubectl, make_sandbox
from bastion.store.verify import load_private_key

Found = Iterator[tuple[Loc, str]]
"""What a check yields: the key path of each problem and what is wrong there."""


def _secret_file(cfg: Config, loc: Loc, name: str) -> Found:
    """A file holding a secret must be readable text and not empty (an empty password fails much later, obscurely)."""
    p = cfg.resolve(name)
    try:
        if not p.read_text().strip():
            yield loc, f"{p} is empty"
    except (OSError, UnicodeDecodeError) as e:
        yield loc, f"cannot read {p}: {e}"


def _users(cfg: Config) -> Found:
    """Local users' public keys parse, inline or in their authorized_keys_file."""
    for name, user in cfg.users.items():
        for i, line in enumerate(user.authorized_keys):
            try:
                asyncssh.import_authorized_keys(line)
            except (ValueError, asyncssh.KeyImportError) as e:
                yield ("users", name, "authorized_keys", i), f"not a valid public key line ({e})"
        if user.authorized_keys_file:
            p = cfg.resolve(user.authorized_keys_file)
            try:
                asyncssh.read_authorized_keys(str(p))
            except (OSError, ValueError, asyncssh.KeyImportError) as e:
                yield ("users", name, "authorized_keys_file"), f"cannot read authorized keys from {p}: {e}"


def _ssh_resource(cfg: Config, name: str, res: SshResource) -> Found:
    """The bastion's key for the target loads and the pinned host key parses."""
    key_path = cfg.resolve(res.credential.private_key_file)
    try:
        asyncssh.read_private_key(str(key_path))
    except (OSError, ValueError, asyncssh.KeyImportError) as e:
        yield ("resources", name, "credential", "private_key_file"), f"cannot load private key {key_path}: {e}"
    try:
        asyncssh.import_public_key(res.host_key)
    except (ValueError, asyncssh.KeyImportError) as e:
        yield ("resources", name, "host_key"), f"not a valid public host key ({e})"


def _pg_resource(cfg: Config, name: str, res: PgResource) -> Found:
    """The password file is readable, and verify-full has a CA to verify against."""
    yield from _secret_file(cfg, ("resources", name, "credential", "password_file"), res.credential.password_file)
    if res.tls.mode == "verify-full" and not (res.tls.ca_file and cfg.resolve(res.tls.ca_file).is_file()):
        yield ("resources", name, "tls"), "verify-full needs ca_file, a readable CA certificate file"


def _kube_resource(cfg: Config, name: str, res: KubeResource) -> Found:
    """The credential files are readable and the CA file, if given, exists."""
    c = res.credential
    for field_name, fp in (("token_file", c.token_file), ("client_cert_file", c.client_cert_file),
                           ("client_key_file", c.client_key_file)):
        if fp is not None:
            yield from _secret_file(cfg, ("resources", name, "credential", field_name), fp)
    if res.ca_file and not cfg.resolve(res.ca_file).is_file():
        yield ("resources", name, "ca_file"), f"{cfg.resolve(res.ca_file)} is not a readable file"


def _resource_names(cfg: Config) -> Found:
    """A resource may not be named like a command of ``ssh bastion WORD`` (review, approve, deny, observe, help)."""
    for name in cfg.resources:
        if name.lower() in RESERVED_NAMES:
            yield ("resources", name), (f"{name!r} is reserved: `ssh bastion {name.lower()}` is a command of the "
                                        f"bastion ({', '.join(sorted(RESERVED_NAMES))}); rename the resource")


def _moderators(cfg: Config) -> Found:
    """A moderated resource names roles that exist and may observe its sessions (reviewers of it, or auditors):
    otherwise no one could ever open it."""
    for name, res in cfg.resources.items():
        if res.moderators is None:
            continue
        if isinstance(res, SshResource) and res.forwarding:
            yield (("resources", name, "forwarding"),
                   "a moderated resource cannot forward ports: no moderator can watch a tunnel (remove one of them)")
        if isinstance(res, KubeResource) and res.port_forward:
            yield (("resources", name, "port_forward"),
                   "a moderated resource cannot forward ports: no moderator can watch a tunnel (remove one of them)")
        for i, role in enumerate(res.moderators.roles):
            r = cfg.roles.get(role)
            if r is None:
                yield ("resources", name, "moderators", "roles", i), f"no role {role!r} is defined"
            elif not (r.audit or r.reviews(name)):
                yield (("resources", name, "moderators", "roles", i),
                       f"role {role!r} can neither review {name} nor audit: its members cannot observe its sessions")


def _resource_files(cfg: Config) -> Found:
    """Each resource's credentials and certificates, by kind."""
    for name, res in cfg.resources.items():
        if isinstance(res, PgResource):
            yield from _pg_resource(cfg, name, res)
        elif isinstance(res, KubeResource):
            yield from _kube_resource(cfg, name, res)
        else:
            yield from _ssh_resource(cfg, name, res)


def _oidc_client_secret(cfg: Config) -> Found:
    """A confidential OIDC client's secret is readable."""
    if cfg.oidc is not None and cfg.oidc.client_secret_file:
        yield from _secret_file(cfg, ("oidc", "client_secret_file"), cfg.oidc.client_secret_file)


def _recordings(cfg: Config) -> Found:
    """An S3 bucket for recordings: a complete key pair (or none), a readable secret, and boto3 installed."""
    s3 = cfg.recordings.s3
    if s3 is None:
        return
    if bool(s3.access_key_id) != bool(s3.secret_access_key_file):
        yield ("recordings", "s3"), ("give access_key_id and secret_access_key_file together (or neither, for "
                                     "boto3's own credentials: environment, instance role)")
    if s3.secret_access_key_file:
        yield from _secret_file(cfg, ("recordings", "s3", "secret_access_key_file"), s3.secret_access_key_file)
    try:
        import boto3  # noqa: F401  (only whether it is installed: it is an optional extra)
    except ImportError:
        yield ("recordings", "s3"), "S3 storage needs boto3: pip install 'bastion[s3]'"


def _oidc_scopes(cfg: Config) -> Found:
    """Without the openid scope the provider returns no ID token, and logins could never complete."""
    if cfg.oidc is not None and "openid" not in cfg.oidc.scopes:
        yield ("oidc", "scopes"), "must include openid"


def _kubectl(cfg: Config) -> Found:
    """Kubernetes sessions run kubectl: it must be there before anyone picks such a resource."""
    if any(isinstance(r, KubeResource) for r in cfg.resources.values()) and find_kubectl(cfg.kubectl) is None:
        where: Loc = ("kubectl",) if cfg.kubectl else ("resources",)
        yield where, f"kubernetes resources need kubectl: {cfg.kubectl or 'none on PATH'} is not an executable"


def _audit(cfg: Config) -> Found:
    """The chain-signing key loads (a daemon that cannot sign would leave the audit chain unsigned)."""
    if cfg.signing_key is not None:
        try:
            load_private_key(cfg.signing_key)
        except (OSError, ValueError) as e:
            yield ("audit", "signing_key_file"), str(e)


def _sandbox(cfg: Config) -> Found:
    """The sandbox mode is possible on this host (e.g. ``required`` with no bubblewrap is not)."""
    try:
        make_sandbox(cfg.sandbox.mode, cfg.sandbox.user)
    except SandboxError as e:
        yield ("sandbox",), str(e)


def _resource_policies(cfg: Config) -> Found:
    """A resource's policy exists (else its commands would silently fall back to no policy)."""
    for name, res in cfg.resources.items():
        if res.policy is not None and res.policy not in cfg.policies:
            yield ("resources", name, "policy"), (f"no policy named {res.policy!r} (defined: "
                                                  f"{', '.join(sorted(cfg.policies)) or 'none'})")


def _policies(cfg: Config) -> Found:
    """Approvers named in rules are roles with review rights (else a held command could never be approved)."""
    reviewer_roles = {n for n, r in cfg.roles.items() if r.review}
    for pname, pset in cfg.policies.items():
        for i, rule in enumerate(pset.rules):
            for approver in rule.approver_roles:
                if approver not in reviewer_roles:
                    yield (("policies", pname, "rules", i, "approvers", "roles"),
                           f"{approver!r} is not a role with review rights")


def _roles(cfg: Config) -> Found:
    """Each glob a role grants or lets members request matches a resource, and requested access has a reviewer."""
    for rname, role in cfg.roles.items():
        for i, pat in enumerate(role.resources):
            if not any(fnmatch.fnmatchcase(r, pat) for r in cfg.resources):
                yield ("roles", rname, "resources", i), f"{pat!r} matches no resource"
        for i, pat in enumerate(role.request):
            if not any(fnmatch.fnmatchcase(r, pat) for r in cfg.resources):
                yield ("roles", rname, "request", i), f"{pat!r} matches no resource"
            elif not any(other.reviews(r) for other in cfg.roles.values() for r in cfg.resources
                         if fnmatch.fnmatchcase(r, pat)):
                yield ("roles", rname, "request", i), f"no role reviews what {pat!r} matches: nobody could grant it"


def _host_keys(cfg: Config) -> Found:
    """Existing host keys load; missing ones can be created (their directory exists)."""
    for i, hk in enumerate(cfg.host_keys):
        if hk.exists():
            try:
                asyncssh.read_private_key(str(hk))
            except (OSError, ValueError, asyncssh.KeyImportError) as e:
                yield ("host_keys", i), f"cannot load host key {hk}: {e}"
        elif not hk.parent.is_dir():
            yield ("host_keys", i), f"directory {hk.parent} does not exist (the key itself is created on first start)"


def _database(cfg: Config) -> Found:
    """SQLite creates its file but not the directory it goes in."""
    if cfg.database_url.startswith("sqlite:///"):
        db_dir = Path(cfg.database_url[len("sqlite:///"):]).parent
        if not db_dir.is_dir():
            yield ("database",), f"directory {db_dir} does not exist"


def _metrics(cfg: Config) -> Found:
    """The endpoint's token file is readable and not empty, and its TLS certificate and key load together."""
    m = cfg.metrics
    if m is None:
        return
    if m.address[1] == cfg.listen.port:
        yield ("metrics", "listen"), f"port {cfg.listen.port} is the SSH port (listen.port): pick another"
    if m.token_file:
        yield from _secret_file(cfg, ("metrics", "token_file"), m.token_file)
    if m.tls is not None:
        cert, key = cfg.resolve(m.tls.cert_file), cfg.resolve(m.tls.key_file)
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key))
        except (OSError, ssl.SSLError) as e:
            yield ("metrics", "tls"), f"cannot load the certificate {cert} with the key {key}: {e}"


CHECKS: tuple[Callable[[Config], Found], ...] = (
    _users, _resource_names, _moderators, _resource_files, _oidc_client_secret, _recordings, _oidc_scopes, _kubectl,
    _audit, _sandbox, _resource_policies, _policies, _roles, _host_keys, _database, _metrics,
)
"""Every check, in the order their problems are listed (the order the file has always reported them in)."""


def semantic_checks(cfg: Config) -> list[str]:
    """Every problem the checks find, each as ``FILE:LINE: key.path: message``."""
    return [problem(cfg.path, cfg.lines, loc, msg) for check in CHECKS for loc, msg in check(cfg)]
