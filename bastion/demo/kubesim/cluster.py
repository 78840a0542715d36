"""The simulated cluster's objects: the seed (namespaces, a node, pods, a secret, a config map), the API's resource
list for discovery, the Table columns kubectl prints, and ``meta/v1 Status`` errors."""

from __future__ import annotations

import base64
import datetime as dt
import time
import uuid
from typing import Any


def ts(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(t: float) -> str:
    s = max(0, int(time.time() - t))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def meta(name: str, ns: str | None, created: float, **extra: Any) -> dict[str, Any]:
    m: dict[str, Any] = {"name": name, "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{ns}/{name}")),
                         "resourceVersion": "1", "creationTimestamp": ts(created)}
    if ns is not None:
        m["namespace"] = ns
    m.update(extra)
    return m


def _pod(name: str, ns: str, created: float, image: str, app: str, ip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta(name, ns, created, labels={"app": app}),
            "spec": {"containers": [{"name": app, "image": image}], "nodeName": "node-1",
                     "restartPolicy": "Always", "serviceAccountName": "default"},
            "status": {"phase": "Running", "podIP": ip, "hostIP": "10.0.0.1", "startTime": ts(created),
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": app, "ready": True, "restartCount": 0, "image": image,
                                              "imageID": "", "started": True,
                                              "state": {"running": {"startedAt": ts(created)}}}]}}


def seed_objects(now: float | None = None) -> dict[tuple[str, str | None], dict[str, dict[str, Any]]]:
    """The cluster's initial objects: {(resource, namespace or None): {name: object}}."""
    t = (now or time.time()) - 3 * 3600
    secret_data = {"password": base64.b64encode(b"password-not-for-you").decode()}
    return {
        ("namespaces", None): {n: {"apiVersion": "v1", "kind": "Namespace", "metadata": meta(n, None, t),
                                   "status": {"phase": "Active"}} for n in ("default", "kube-system", "payments")},
        ("nodes", None): {"node-1": {"apiVersion": "v1", "kind": "Node", "metadata": meta("node-1", None, t),
                                     "status": {"conditions": [{"type": "Ready", "status": "True"}],
                                                "nodeInfo": {"kubeletVersion": "v1.33.0"}}}},
        ("pods", "default"): {f"web-{i}": _pod(f"web-{i}", "default", t + 60 * i, "nginx:1.27", "web",
                                              f"10.244.0.{10 + i}") for i in (1, 2, 3)},
        ("pods", "payments"): {"ledger-0": _pod("ledger-0", "payments", t, "postgres:16", "ledger", "10.244.0.30")},
        ("pods", "kube-system"): {"coredns-0": _pod("coredns-0", "kube-system", t, "coredns:1.11", "coredns",
                                                    "10.244.0.2")},
        ("secrets", "default"): {"db-password": {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                                 "metadata": meta("db-password", "default", t),
                                                 "data": secret_data}},
        ("configmaps", "default"): {"web-config": {"apiVersion": "v1", "kind": "ConfigMap",
                                                   "metadata": meta("web-config", "default", t),
                                                   "data": {"LISTEN": ":8080"}}},
    }


# resource -> (kind, namespaced, short names, table columns)
RESOURCES: dict[str, tuple[str, bool, list[str]]] = {
    "pods": ("Pod", True, ["po"]),
    "secrets": ("Secret", True, []),
    "configmaps": ("ConfigMap", True, ["cm"]),
    "events": ("Event", True, ["ev"]),
    "serviceaccounts": ("ServiceAccount", True, ["sa"]),
    "namespaces": ("Namespace", False, ["ns"]),
    "nodes": ("Node", False, ["no"]),
}
SUBRESOURCES = {"pods": ["exec", "attach", "log", "portforward", "proxy", "status"], "nodes": ["proxy"],
                "serviceaccounts": ["token"]}
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def api_resource_list() -> dict[str, Any]:
    out = []
    for res, (kind, namespaced, short) in RESOURCES.items():
        singular = kind.lower()
        out.append({"name": res, "singularName": singular, "namespaced": namespaced, "kind": kind, "verbs": VERBS,
                    **({"shortNames": short} if short else {})})
        for sub in SUBRESOURCES.get(res, []):
            verbs = ["get"] if sub == "log" else ["create", "get"]
            out.append({"name": f"{res}/{sub}", "singularName": "", "namespaced": namespaced,
                        "kind": "PodExecOptions" if sub == "exec" else kind, "verbs": verbs})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": out}


def columns(res: str) -> list[tuple[str, str]]:
    return {
        "pods": [("Name", "string"), ("Ready", "string"), ("Status", "string"), ("Restarts", "string"),
                 ("Age", "string")],
        "secrets": [("Name", "string"), ("Type", "string"), ("Data", "string"), ("Age", "string")],
        "configmaps": [("Name", "string"), ("Data", "string"), ("Age", "string")],
        "namespaces": [("Name", "string"), ("Status", "string"), ("Age", "string")],
        "nodes": [("Name", "string"), ("Status", "string"), ("Roles", "string"), ("Age", "string"),
                  ("Version", "string")],
    }.get(res, [("Name", "string"), ("Age", "string")])


def cells(res: str, obj: dict[str, Any]) -> list[Any]:
    m = obj["metadata"]
    created = dt.datetime.strptime(m["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()
    age = _age(created)
    if res == "pods":
        cs = obj["status"].get("containerStatuses", [])
        ready = f"{sum(1 for c in cs if c.get('ready'))}/{len(obj['spec']['containers'])}"
        status = "Terminating" if m.get("deletionTimestamp") else obj["status"].get("phase", "Unknown")
        return [m["name"], ready, status, str(sum(c.get("restartCount", 0) for c in cs)), age]
    if res == "secrets":
        return [m["name"], obj.get("type", "Opaque"), str(len(obj.get("data", {}))), age]
    if res == "configmaps":
        return [m["name"], str(len(obj.get("data", {}))), age]
    if res == "namespaces":
        return [m["name"], obj["status"]["phase"], age]
    if res == "nodes":
        return [m["name"], "Ready", "<none>", age, obj["status"]["nodeInfo"]["kubeletVersion"]]
    return [m["name"], age]


def status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    """A ``meta/v1 Status`` (what kubectl prints as ``Error from server (reason): message``)."""
    s: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                         "message": message, "reason": reason, "code": code}
    if details:
        s["details"] = details
    return s
