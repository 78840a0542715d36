"""The kubectl prompt of a ``kubernetes`` resource: runs inside the session sandbox with the system Python, standard
library only (the daemon copies this file and ``policies/kubectl.py`` into the session's home).

At start it makes a listening socket on 127.0.0.1 in the sandbox's own network namespace and hands it to the daemon
over a unix socket (SCM_RIGHTS): the daemon's API proxy accepts kubectl's connections on it, so kubectl reaches the
proxy and nothing else. The daemon answers with the kubeconfig's path. Then each line is split with shlex and run as
``kubectl ARGS`` (no shell), or, with ``--command``, one line is run and its status returned.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    from kubectl_line import (  # type: ignore[import-not-found]  # the copy next to this file, in the sandbox
        KubectlLineError,
        kubectl_argv,
    )
except ImportError:  # run from the source tree
    from policies.kubectl import KubectlLineError, kubectl_argv

HELP = """Each line runs kubectl (typing "kubectl" first is optional); there is no shell, so no pipes or variables.
Every API request is checked by the bastion: some wait for a reviewer (Ctrl-C withdraws), some are refused.
Not available: --server, --kubeconfig, --token, --as, --context and friends; config, proxy, edit, plugins.
Commands: help, exit (or Ctrl-D)."""


def handoff(path: str) -> str:
    """Give the daemon a listening socket in this network namespace; the kubeconfig path it answers with."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        socket.send_fds(s, [b"listener\n"], [listener.fileno()])
        listener.close()
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    status, _, rest = answer.decode(errors="replace").strip().partition(" ")
    if status != "ok":
        raise SystemExit(f"bastion: the kubectl session cannot start: {rest or 'no answer from the daemon'}")
    return rest


def run(kubectl: str, kubeconfig: str, line: str) -> int:
    """Run one line; kubectl's exit status (2 when the line is refused)."""
    try:
        argv = kubectl_argv(line)
    except KubectlLineError as e:
        print(f"bastion: {e}", file=sys.stderr, flush=True)
        return 2
    if not argv:
        return 0
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "KUBECONFIG": kubeconfig,
           "LANG": os.environ.get("LANG", "C.UTF-8"), "TERM": os.environ.get("TERM", "dumb"),
           "KUBE_EDITOR": "/bin/false", "EDITOR": "/bin/false", "KUBECTL_COMMAND_HEADERS": "false"}
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is kubectl's (same process group)
    try:
        return subprocess.call([kubectl, *argv], env=env, preexec_fn=_default_sigint)
    except OSError as e:
        print(f"bastion: cannot run kubectl: {e}", file=sys.stderr, flush=True)
        return 127
    finally:
        signal.signal(signal.SIGINT, old)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def prompt(kubectl: str, kubeconfig: str, resource: str, namespace: str) -> int:
    """The interactive loop; returns at EOF or ``exit``."""
    try:
        import readline  # noqa: F401 - line editing and in-memory history for input()
    except ImportError:
        pass
    print(f"kubectl prompt for {resource} (namespace {namespace}). Type help for help, exit or Ctrl-D to leave.",
          flush=True)
    while True:
        try:
            line = input(f"{resource}> ")
        except EOFError:
            print(flush=True)
            return 0
        except KeyboardInterrupt:
            print(flush=True)
            continue
        stripped = line.strip()
        if stripped in ("exit", "quit", "logout"):
            return 0
        if stripped in ("help", "?"):
            print(HELP, flush=True)
            continue
        run(kubectl, kubeconfig, line)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kubeprompt")
    ap.add_argument("--handoff", required=True)
    ap.add_argument("--kubectl", required=True)
    ap.add_argument("--resource", required=True)
    ap.add_argument("--namespace", default="default")
    ap.add_argument("--command")
    args = ap.parse_args(argv)
    kubeconfig = handoff(args.handoff)
    if args.command is not None:
        return run(args.kubectl, kubeconfig, args.command)
    return prompt(args.kubectl, kubeconfig, args.resource, args.namespace)


if __name__ == "__main__":
    sys.exit(main())
