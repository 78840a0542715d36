"""The kubectl prompt's line check: a line is split like a shell would (shlex, no shell ever runs it), ``kubectl``
in front is optional, and what would take kubectl away from the bastion's proxy or out of its sandbox is refused.

Standard library only: the prompt runs this module inside the session sandbox with the system Python. It is the
friendly layer; the Kubernetes API proxy decides every request whatever the line said.
"""

from __future__ import annotations

import shlex

# flags that pick another server, credential, identity or config: the proxy and its token are the only way out
FORBIDDEN_FLAGS = {
    "--server": "the server is the bastion's", "-s": "the server is the bastion's",
    "--kubeconfig": "the kubeconfig is the bastion's", "--context": "the kubeconfig is the bastion's",
    "--cluster": "the kubeconfig is the bastion's", "--user": "the kubeconfig is the bastion's",
    "--token": "the bastion holds the credential", "--username": "the bastion holds the credential",
    "--password": "the bastion holds the credential", "--client-certificate": "the bastion holds the credential",
    "--client-key": "the bastion holds the credential", "--certificate-authority": "the bastion checks the server",
    "--insecure-skip-tls-verify": "the bastion checks the server", "--tls-server-name": "the bastion checks the server",
    "--as": "impersonation is the bastion's to decide", "--as-group": "impersonation is the bastion's to decide",
    "--as-uid": "impersonation is the bastion's to decide",
}
# the subcommands the prompt runs; anything else (plugins, config, proxy, edit, ...) is refused
ALLOWED = {
    "get", "describe", "logs", "explain", "api-resources", "api-versions", "version", "cluster-info", "top",
    "create", "apply", "delete", "patch", "replace", "scale", "rollout", "label", "annotate", "set", "expose",
    "run", "exec", "attach", "port-forward", "cp", "diff", "wait", "auth", "autoscale", "cordon", "uncordon",
    "drain", "taint", "certificate", "events", "debug", "kustomize", "help", "options",
}
REFUSED = {
    "config": "the kubeconfig belongs to the bastion",
    "proxy": "kubectl proxy would serve the API without the bastion's checks",
    "edit": "there is no editor here; use `get -o yaml`, then `apply -f -`",
    "plugin": "kubectl plugins do not run here",
    "completion": "completion scripts are not needed in this prompt",
    "alpha": "alpha commands are not offered",
}
# flags that take a value as the next word (so the first non-flag word is the subcommand)
VALUE_FLAGS = {"-n", "--namespace", "-v", "--v", "--request-timeout", "--log-file", "--cache-dir", "--profile",
               "--profile-output", "-l", "--selector", "-o", "--output", "-c", "--container"}


class KubectlLineError(ValueError):
    """A line the prompt will not run; the message says why (for the operator)."""


def kubectl_argv(line: str) -> list[str]:
    """The arguments to give kubectl for ``line`` (``[]`` for an empty line); KubectlLineError if refused."""
    try:
        words = shlex.split(line, comments=False, posix=True)
    except ValueError as e:
        raise KubectlLineError(f"cannot split the line: {e}") from None
    if words and words[0] in ("kubectl", "k"):
        words = words[1:]
    if not words:
        return []
    sub: str | None = None
    value_next = False
    for i, w in enumerate(words):
        if w == "--":
            break  # what follows is for the pod (exec) or the generator (run): kubectl does not read it
        if w.startswith("--"):
            flag = w.split("=", 1)[0]
            if flag in FORBIDDEN_FLAGS:
                raise KubectlLineError(f"{flag} is not allowed: {FORBIDDEN_FLAGS[flag]}")
        elif w.startswith("-s") and not value_next:
            raise KubectlLineError(f"-s is not allowed: {FORBIDDEN_FLAGS['-s']}")
        if w in ("-f", "--filename", "-k", "--kustomize") and i + 1 < len(words):
            _check_source(words[i + 1])
        elif w.startswith(("--filename=", "--kustomize=", "-f=", "-k=")) or (w[:2] in ("-f", "-k") and len(w) > 2
                                                                            and w[2] != "="):
            _check_source(w.split("=", 1)[1] if "=" in w[:12] else w[2:])
        if value_next:
            value_next = False
        elif w.startswith("-"):
            value_next = sub is None and w in VALUE_FLAGS
        elif sub is None:
            sub = w
    if sub is None:
        return words  # only flags: kubectl prints its help
    if sub in REFUSED:
        raise KubectlLineError(f"kubectl {sub} is not available here: {REFUSED[sub]}")
    if sub not in ALLOWED:
        raise KubectlLineError(f"unknown or unavailable kubectl command {sub!r} (plugins do not run here)")
    return words


def _check_source(src: str) -> None:
    if "://" in src:
        raise KubectlLineError("manifests from URLs are not read here; pipe them in with -f -")
