"""``bastion ca``: the line operators put in known_hosts so that ``ssh -J`` sessions, whose inner host key the
bastion presents with a certificate signed by its host CA, pass ``StrictHostKeyChecking=yes``."""

from __future__ import annotations

import argparse
from typing import Any

from bastion.cli.common import load_for_command
from bastion.ssh.jump import known_hosts_line


def cmd_ca(args: argparse.Namespace) -> int:
    cfg = load_for_command(args, check_files=False)
    if cfg is None:
        return 1
    from bastion.daemon import ensure_host_ca

    key = ensure_host_ca(cfg)
    print(known_hosts_line(cfg, key.export_public_key().decode()))
    return 0


def register(sub: Any) -> None:
    s = sub.add_parser("ca", help="the known_hosts line (@cert-authority) for ssh -J through this bastion")
    s.add_argument("--config", dest="config_file")
    s.set_defaults(func=cmd_ca)
