"""A simulated Kubernetes API server for the demo's ``demo-k8s`` resource and the tests (there is no real API server
on this machine). It speaks enough of the API for stock kubectl: discovery, pods (list/get/delete/deletecollection,
Table output, logs, describe), secrets, namespaces, nodes, ``kubectl auth whoami``, and exec over WebSocket
(``v5.channel.k8s.io``/``v4``) into a small scripted shell. It records every request that reaches it, so tests can
prove what the bastion let through. Bearer token and/or client certificate authentication. Never for production.

``python -m bastion.demo.kubesim --dir D`` writes TLS material and a token into D and serves until interrupted.
"""

from bastion.demo.kubesim.cluster import RESOURCES, seed_objects, status
from bastion.demo.kubesim.podshell import PodShell
from bastion.demo.kubesim.server import KubeSim, SimTLS, main, make_tls, run_in_thread
from bastion.demo.kubesim.stream import WebSocket

__all__ = ["RESOURCES", "KubeSim", "PodShell", "SimTLS", "WebSocket", "main", "make_tls", "run_in_thread",
           "seed_objects", "status"]
