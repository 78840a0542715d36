"""Kubernetes request parsing (policies/kube.py), kube rules and guardrails (policies/engine.evaluate_kube), and the
kubectl prompt's line check (policies/kubectl.py)."""

from __future__ import annotations

import re

import pytest

from policies.engine import Action, PolicySet, Rule, evaluate_kube
from policies.kube import KubeParseError, parse_request
from policies.kubectl import KubectlLineError, kubectl_argv


@pytest.mark.parametrize(("method", "target", "verb", "res", "ns", "name"), [
    ("GET", "/api/v1/namespaces/default/pods", "list", "pods", "default", ""),
    ("GET", "/api/v1/pods?watch=true", "watch", "pods", "", ""),
    ("GET", "/api/v1/watch/namespaces/a/pods", "watch", "pods", "a", ""),
    ("GET", "/api/v1/namespaces/default/pods/web-1", "get", "pods", "default", "web-1"),
    ("HEAD", "/api/v1/namespaces/default/pods/web-1", "get", "pods", "default", "web-1"),
    ("DELETE", "/api/v1/namespaces/default/pods/web-1", "delete", "pods", "default", "web-1"),
    ("DELETE", "/api/v1/namespaces/default/pods", "deletecollection", "pods", "default", ""),
    ("POST", "/api/v1/namespaces/default/pods", "create", "pods", "default", ""),
    ("PATCH", "/apis/apps/v1/namespaces/x/deployments/d", "patch", "deployments.apps", "x", "d"),
    ("PUT", "/apis/apps/v1/namespaces/x/deployments/d/scale", "update", "deployments.apps/scale", "x", "d"),
    ("GET", "/api/v1/namespaces/default/pods/w/exec?command=ls", "create", "pods/exec", "default", "w"),
    ("POST", "/api/v1/namespaces/default/pods/w/portforward", "create", "pods/portforward", "default", "w"),
    ("GET", "/api/v1/nodes/n1/proxy/metrics", "create", "nodes/proxy", "", "n1"),
    ("GET", "/api/v1/proxy/namespaces/a/services/s", "create", "services/proxy", "a", "s"),
    ("GET", "/api/v1/namespaces/foo", "get", "namespaces", "foo", "foo"),
    ("PUT", "/api/v1/namespaces/foo/finalize", "update", "namespaces/finalize", "foo", "foo"),
    ("GET", "/api/v1/namespaces/default/Secrets/x", "get", "secrets", "default", "x"),
])
def test_parse_resource_requests(method: str, target: str, verb: str, res: str, ns: str, name: str) -> None:
    r = parse_request(method, target)
    assert r.resource_request
    assert (r.verb, r.resource_path, r.namespace, r.name) == (verb, res, ns, name)


def test_exec_argv_and_interactivity() -> None:
    r = parse_request("GET", "/api/v1/namespaces/d/pods/w/exec?command=sh&command=-c&command=echo+hi&stdout=true")
    assert r.command == ("sh", "-c", "echo hi") and not r.interactive
    r = parse_request("GET", "/api/v1/namespaces/d/pods/w/exec?command=sh&stdin=true&tty=true")
    assert r.interactive
    assert parse_request("GET", "/api/v1/namespaces/d/pods/w/attach?stdin=1").interactive


@pytest.mark.parametrize("target", ["/version", "/api", "/apis", "/api/v1", "/apis/apps/v1", "/apis/apps",
                                    "/openapi/v2", "/openapi/v3/apis/apps/v1"])
def test_discovery(target: str) -> None:
    r = parse_request("GET", target)
    assert not r.resource_request and r.discovery


@pytest.mark.parametrize("target", [
    "/api/v1/namespaces/default/pods/%2e%2e/secrets", "/api/v1/namespaces/default/pods/web%2F1",
    "/api/v1//namespaces/default/secrets", "/api/v1/namespaces/default/pods/../secrets/x",
    "/api/v1/namespaces/./secrets", "/api\\v1/pods", "http://evil/api/v1/pods", "api/v1/pods",
    "/api/v1/pods/\u00e9", "/api/v1/pods/a b", "/api/v1/pods#frag",
])
def test_ambiguous_paths_are_refused(target: str) -> None:
    with pytest.raises(KubeParseError):
        parse_request("GET", target)


def test_unknown_method_refused() -> None:
    with pytest.raises(KubeParseError):
        parse_request("CONNECT", "/api/v1/pods")
    with pytest.raises(KubeParseError):
        parse_request("OPTIONS", "/api/v1/pods")


def rule(name: str, action: Action, **kw: object) -> Rule:
    return Rule(name, action, **kw)  # type: ignore[arg-type]


POLICY = PolicySet("k8s", Action.ALLOW, (
    rule("no-secrets", Action.BLOCK, api_resources=("secrets",), reason="secrets stay in the cluster"),
    rule("delete-needs-approval", Action.REQUIRE_APPROVAL, verbs=("delete",), approver_roles=("reviewers",)),
    rule("exec-needs-approval", Action.REQUIRE_APPROVAL, api_resources=("pods/exec", "pods/attach"),
         approver_roles=("reviewers",)),
    rule("kube-system-read-only", Action.BLOCK, namespaces=("kube-system",),
         verbs=("create", "update", "patch", "delete")),
    rule("no-rm", Action.BLOCK, programs=("rm",), reason="no deleting files"),
    rule("logs-warn", Action.WARN, api_resources=("pods/log",)),
))


def judge(method: str, target: str, policy: PolicySet = POLICY, **kw: object):  # type: ignore[no-untyped-def]
    return evaluate_kube(policy, parse_request(method, target), groups=["ops"], resource="k8s", **kw)  # type: ignore


def test_rules_decide() -> None:
    assert judge("GET", "/api/v1/namespaces/default/pods").action == Action.ALLOW
    d = judge("GET", "/api/v1/namespaces/default/secrets/db-password")
    assert d.action == Action.BLOCK and d.rule == "no-secrets" and d.reason == "secrets stay in the cluster"
    assert judge("GET", "/api/v1/secrets?watch=1").rule == "no-secrets"  # watch of all secrets too
    d = judge("DELETE", "/api/v1/namespaces/default/pods/web-1")
    assert d.action == Action.REQUIRE_APPROVAL and d.approver_roles == ("reviewers",)
    assert d.text == "delete pods web-1 -n default"
    # deletecollection is covered by a rule naming delete
    assert judge("DELETE", "/api/v1/namespaces/default/pods").rule == "delete-needs-approval"
    assert judge("GET", "/api/v1/namespaces/default/pods/web-1/log").action == Action.WARN
    assert judge("POST", "/api/v1/namespaces/kube-system/pods").rule == "kube-system-read-only"


def test_exec_interactive_needs_approval_and_argv_is_judged() -> None:
    d = judge("GET", "/api/v1/namespaces/d/pods/w/exec?command=sh&stdin=true&tty=true")
    assert d.action == Action.REQUIRE_APPROVAL and d.rule == "exec-needs-approval"
    d = judge("GET", "/api/v1/namespaces/d/pods/w/exec?command=rm&command=-rf&command=/data&stdout=true")
    assert d.action == Action.BLOCK and d.rule == "no-rm" and "in the pod" in d.reason
    # opaque argv (sh -c) gets the strictest the policy can give
    d = judge("GET", "/api/v1/namespaces/d/pods/w/exec?command=sh&command=-c&command=ls&stdout=true")
    assert d.action == Action.BLOCK


def test_guardrails_when_no_rule_names_it() -> None:
    open_policy = PolicySet("open", Action.ALLOW, ())
    for target, why in [("/api/v1/namespaces/d/secrets/x", "secret"), ("/api/v1/nodes/n/proxy/", "proxy"),
                        ("/api/v1/namespaces/d/pods/p/proxy/x", "proxy"),
                        ("/api/v1/proxy/nodes/n/metrics", "proxy"),
                        ("/apis/certificates.k8s.io/v1/certificatesigningrequests/c/approval", "certificate"),
                        ("/metrics", "not an API resource"), ("/logs/", "not an API resource"),
                        ("/debug/pprof/profile", "not an API resource")]:
        d = judge("GET", target, open_policy)
        assert d.action == Action.BLOCK and why in d.reason, (target, d)
    d = judge("POST", "/api/v1/namespaces/d/serviceaccounts/default/token", open_policy)
    assert d.action == Action.BLOCK and "credential" in d.reason
    pf = "/api/v1/namespaces/d/pods/p/portforward"
    assert judge("GET", pf, open_policy).action == Action.BLOCK
    assert judge("GET", pf, open_policy, port_forward=True).action == Action.ALLOW
    # an explicit rule lifts a guardrail deliberately
    allow = PolicySet("a", Action.BLOCK, (rule("read-secrets", Action.ALLOW, api_resources=("secrets",),
                                                verbs=("get",)),))
    assert judge("GET", "/api/v1/namespaces/d/secrets/x", allow).action == Action.ALLOW
    assert judge("GET", "/api/v1/namespaces/d/secrets", allow).action == Action.BLOCK  # list: no rule, default
    # discovery is always readable, even under a default of block
    assert judge("GET", "/apis", allow).action == Action.ALLOW


def test_rbac_style_resource_patterns() -> None:
    p = PolicySet("p", Action.ALLOW, (rule("pods-only", Action.BLOCK, api_resources=("pods",)),))
    assert judge("GET", "/api/v1/namespaces/d/pods/x", p).action == Action.BLOCK
    assert judge("GET", "/api/v1/namespaces/d/pods/x/log", p).action == Action.ALLOW  # pods does not cover pods/log
    p = PolicySet("p", Action.ALLOW, (rule("any-scale", Action.BLOCK, api_resources=("*/scale",)),))
    assert judge("PUT", "/apis/apps/v1/namespaces/d/deployments/x/scale", p).action == Action.BLOCK
    p = PolicySet("p", Action.ALLOW, (rule("apps", Action.BLOCK, api_resources=("deployments.apps",)),))
    assert judge("GET", "/apis/apps/v1/namespaces/d/deployments/x", p).action == Action.BLOCK
    assert judge("GET", "/apis/extensions/v1beta1/namespaces/d/deployments/x", p).action == Action.ALLOW
    p = PolicySet("p", Action.ALLOW, (rule("by-name", Action.BLOCK, names=("prod-*",)),
                                      rule("by-path", Action.BLOCK, paths=("/healthz*",))))
    assert judge("GET", "/api/v1/namespaces/d/pods/prod-1", p).action == Action.BLOCK
    assert judge("GET", "/api/v1/namespaces/d/pods/dev-1", p).action == Action.ALLOW
    assert judge("GET", "/healthz", p).rule == "by-path"
    p = PolicySet("p", Action.ALLOW, (rule("rx", Action.BLOCK, command=re.compile(r"^delete .* -n prod")),))
    assert judge("DELETE", "/api/v1/namespaces/prod/pods/x", p).action == Action.BLOCK
    assert judge("DELETE", "/api/v1/namespaces/dev/pods/x", p).action == Action.ALLOW


def test_rule_kinds_do_not_cross() -> None:
    shell_rule = rule("r", Action.BLOCK, programs=("kubectl",))
    sql_rule = rule("s", Action.BLOCK, statements=("delete",))
    kube_rule = rule("k", Action.BLOCK, verbs=("delete",))
    assert not shell_rule.for_kube and not sql_rule.for_kube and kube_rule.for_kube
    assert not kube_rule.for_shell and not kube_rule.for_sql
    catch_all = rule("all", Action.REQUIRE_APPROVAL)
    assert catch_all.for_kube and catch_all.for_shell and catch_all.for_sql


@pytest.mark.parametrize(("line", "argv"), [
    ("kubectl get pods", ["get", "pods"]),
    ("get pods -n kube-system", ["get", "pods", "-n", "kube-system"]),
    ("-n kube-system get pods", ["-n", "kube-system", "get", "pods"]),
    ("k logs -f web-1", ["logs", "-f", "web-1"]),
    ("exec -it web-1 -- sh -c 'kubectl --server x'", ["exec", "-it", "web-1", "--", "sh", "-c", "kubectl --server x"]),
    ("apply -f -", ["apply", "-f", "-"]),
    ("", []),
    ("kubectl", []),
])
def test_kubectl_lines_run(line: str, argv: list[str]) -> None:
    assert kubectl_argv(line) == argv


@pytest.mark.parametrize(("line", "why"), [
    ("get pods --server=https://10.0.0.1", "--server"),
    ("get pods --server https://10.0.0.1", "--server"),
    ("get pods -s https://10.0.0.1", "-s"),
    ("-shttps://10.0.0.1 get pods", "-s"),
    ("get pods --kubeconfig=/etc/bastion/kube", "--kubeconfig"),
    ("get pods --token abc", "--token"),
    ("get pods --as system:masters", "--as"),
    ("get pods --as=system:masters", "--as"),
    ("get pods --as-group=system:masters", "--as-group"),
    ("--context prod get pods", "--context"),
    ("get pods --insecure-skip-tls-verify", "--insecure-skip-tls-verify"),
    ("config view --raw", "kubeconfig"),
    ("proxy --port 8001", "proxy"),
    ("edit pod web-1", "editor"),
    ("whoami-plugin", "unknown"),
    ("apply -f https://example.test/x.yaml", "URL"),
    ("apply --filename=http://example.test/x.yaml", "URL"),
    ("get pods 'unclosed", "cannot split"),
])
def test_kubectl_lines_refused(line: str, why: str) -> None:
    with pytest.raises(KubectlLineError, match=re.escape(why)):
        kubectl_argv(line)
