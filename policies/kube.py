"""Kubernetes API requests as the bastion judges them: method + path -> verb, group, version, namespace, resource,
subresource, name (the API server's own request-info rules), and the built-in guardrails.

Pure, no I/O. Anything the parser is not sure about is refused (fail closed): percent-encoding, empty, ``.`` or
``..`` segments, backslashes, non-ASCII or control characters, absolute-form targets, unknown methods.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs

SPECIAL_VERBS = {"proxy", "watch"}  # legacy /api/v1/watch/... and /api/v1/proxy/... forms
NAMESPACE_SUBRESOURCES = {"status", "finalize"}
CONNECT_SUBRESOURCES = {"exec", "attach", "portforward", "proxy"}
METHOD_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
SEGMENT = re.compile(r"[A-Za-z0-9._:~@+=,-]{1,253}")
DISCOVERY = re.compile(r"/(version|api|apis|openapi/v2|openapi/v3(/[A-Za-z0-9._/-]*)?|api/v1|apis/[a-z0-9.-]+"
                       r"(/[a-z0-9]+)?)/?")


class KubeParseError(ValueError):
    """The request cannot be judged; the proxy refuses it."""


@dataclass(frozen=True)
class KubeRequest:
    """One API request, as RBAC would see it. ``verb`` is ``create`` for exec/attach/portforward/proxy (as RBAC
    authorizes them), ``list``/``watch``/``deletecollection`` when there is no name."""

    method: str
    path: str
    verb: str
    resource_request: bool
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    command: tuple[str, ...] = ()  # exec: the argv (command=... parameters)
    interactive: bool = False      # exec/attach with stdin or a tty

    @property
    def resource_path(self) -> str:
        """``pods``, ``pods/exec``, ``deployments.apps/scale``: how rules name what is touched."""
        base = self.resource + (f".{self.api_group}" if self.api_group else "")
        return base + (f"/{self.subresource}" if self.subresource else "")

    @property
    def discovery(self) -> bool:
        """A read of discovery, version or OpenAPI documents (kubectl needs them; they hold no object data)."""
        return not self.resource_request and self.verb == "get" and bool(DISCOVERY.fullmatch(self.path))

    def describe(self) -> str:
        """A readable one-liner: ``delete pods web-1 -n default``, ``create pods/exec web-1 -n default: sh``."""
        if not self.resource_request:
            return f"{self.method} {self.path}"
        out = f"{self.verb} {self.resource_path}"
        if self.name:
            out += f" {self.name}"
        if self.namespace:
            out += f" -n {self.namespace}"
        if self.command:
            out += ": " + " ".join(self.command)
        return out


def _segments(path: str) -> list[str]:
    if not path.startswith("/"):
        raise KubeParseError("the request target is not an absolute path")
    if "%" in path or "\\" in path:
        raise KubeParseError("percent-encoded or backslash characters in the path")
    if any(ord(c) < 0x21 or ord(c) > 0x7e for c in path):
        raise KubeParseError("control, space or non-ASCII characters in the path")
    parts = path[1:].split("/")
    if parts and parts[-1] == "" and len(parts) > 1:
        parts = parts[:-1]  # one trailing slash
    if parts == [""]:
        return []
    for p in parts:
        if p in ("", ".", ".."):
            raise KubeParseError("empty, '.' or '..' segments in the path")
        if not SEGMENT.fullmatch(p):
            raise KubeParseError(f"an unexpected character in path segment {p[:40]!r}")
    return parts


def parse_request(method: str, target: str) -> KubeRequest:
    """Parse an HTTP method and request target (path + query) the way the API server's RequestInfoFactory does."""
    method = method.upper()
    if method not in METHOD_VERBS:
        raise KubeParseError(f"method {method[:20]!r} is not used by the Kubernetes API")
    path, _, query = target.partition("?")
    if "#" in target:
        raise KubeParseError("a fragment in the request target")
    parts = _segments(path)
    try:
        params = parse_qs(query, keep_blank_values=True, strict_parsing=False, max_num_fields=200)
    except ValueError as e:
        raise KubeParseError(f"the query string cannot be parsed ({e})") from None
    canonical = "/" + "/".join(parts)
    nonresource = KubeRequest(method, canonical, "get" if method == "HEAD" else method.lower(), False)
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return nonresource
    group = ""
    rest = parts[1:]
    if parts[0] == "apis":
        if len(rest) < 3:
            return nonresource  # /apis/GROUP/VERSION: discovery
        group, rest = rest[0], rest[1:]
    version, rest = rest[0], rest[1:]
    if rest[0] in SPECIAL_VERBS:
        if len(rest) < 2:
            raise KubeParseError("unable to determine the resource of a watch/proxy path")
        verb, rest = rest[0], rest[1:]
    else:
        verb = METHOD_VERBS[method]
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource, name, sub = rest[0], "", ""
    if len(rest) >= 2:
        name = rest[1]
    if len(rest) >= 3 and verb != "proxy":
        sub = rest[2]
    if verb == "proxy":
        sub = "proxy"
    if not name and verb == "get":
        watch = params.get("watch", [""])[-1].lower() in ("true", "1")
        verb = "watch" if watch else "list"
    if not name and verb == "delete":
        verb = "deletecollection"
    command: tuple[str, ...] = ()
    interactive = False
    if sub in CONNECT_SUBRESOURCES:
        verb = "create"
        if sub in ("exec", "attach"):
            command = tuple(params.get("command", []))
            interactive = any(params.get(k, [""])[-1].lower() in ("true", "1") for k in ("stdin", "tty"))
    return KubeRequest(method, canonical, verb, True, group, version, namespace, resource.lower(), sub.lower(), name,
                       command, interactive)


# -- guardrails: what no policy default lets through; only a rule that names it does ----------------------------

GUARDRAILS: tuple[tuple[str, str], ...] = (
    ("*/proxy", "the API server's proxy reaches arbitrary endpoints inside the cluster"),
    ("serviceaccounts/token", "a service account token is a cluster credential the operator would then hold"),
    ("secrets", "secret values would reach the operator"),
    ("*/portforward", "port forwarding is disabled for this resource"),
    ("certificatesigningrequests", "certificate signing requests can mint cluster credentials"),
    ("certificatesigningrequests/*", "certificate signing requests can mint cluster credentials"),
)


def guardrail(req: KubeRequest) -> str | None:
    """Why the built-in guardrails refuse ``req`` when no rule names it (None: they do not)."""
    if not req.resource_request:
        return None if req.discovery else f"{req.method} {req.path} is not an API resource the bastion serves"
    for pattern, why in GUARDRAILS:
        if resource_matches(pattern, req):
            return why
    return None


def resource_matches(pattern: str, req: KubeRequest) -> bool:
    """RBAC-style: ``*`` everything; ``pods`` pods only (not pods/exec); ``pods/*`` its subresources; ``*/scale``;
    ``deployments.apps`` one group; names compare case-insensitively; a trailing ``*`` is a prefix."""
    pattern = pattern.lower()
    if pattern == "*":
        return True
    res, _, sub = pattern.partition("/")
    res_name, _, group = res.partition(".")
    if res_name != "*" and not (res_name == req.resource or res_name.endswith("*")
                                and req.resource.startswith(res_name[:-1])):
        return False
    if group and group != req.api_group:
        return False
    if not sub:
        return not req.subresource
    return sub == "*" or sub == req.subresource
