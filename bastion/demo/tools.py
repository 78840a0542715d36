"""The demo's lines for operators' own tools: scp, sftp, rsync, git, Ansible and ``ssh -J`` to demo-shell through the
bastion, with an ssh config and a known_hosts (the bastion's host CA) written into the state dir so that each line
works as printed, with ``StrictHostKeyChecking=yes`` for the ``-J`` hop."""

from __future__ import annotations

from pathlib import Path

from bastion.config import Config
from bastion.daemon import ensure_host_ca
from bastion.ssh.jump import known_hosts_line


def write_ssh_config(state: Path, port: int, cfg: Config) -> Path:
    """``state/ssh_config`` (a jump host and demo-shell behind it) and ``state/known_hosts`` (the CA line)."""
    keys = state / "keys"
    known = state / "known_hosts"
    known.write_text(known_hosts_line(cfg, ensure_host_ca(cfg).export_public_key().decode()) + "\n")
    path = state / "ssh_config"
    path.write_text(f"""\
# Written by `bastion demo`: use with ssh -F {path}
Host bastion-demo
  HostName 127.0.0.1
  Port {port}
  User alice
  IdentityFile {keys / 'alice'}
  IdentitiesOnly yes
  StrictHostKeyChecking accept-new
  UserKnownHostsFile {state / 'known_hosts_bastion'}
# ssh -J through the bastion: judged, held and recorded like any session; the host certificate is the bastion's
Host demo-shell
  ProxyJump bastion-demo
  User demo
  IdentityFile {keys / 'alice'}
  IdentitiesOnly yes
  StrictHostKeyChecking yes
  UserKnownHostsFile {known}
""")
    return path


def tools_lines(state: Path, port: int, ssh_config: Path) -> str:
    """The banner's lines for alice's own tools on demo-shell."""
    k = state / "keys" / "alice"
    opts = f"-i {k} -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new"
    return f"""\
  your own tools, the target in the user name (alice+demo-shell), judged per file operation and recorded:
    scp:     scp -P {port} {opts} FILE alice+demo-shell@127.0.0.1:/tmp/
    sftp:    sftp -P {port} {opts} alice+demo-shell@127.0.0.1     (rm is refused by rule no-rm; puts into
             /etc or ~/.ssh wait for a reviewer)
    rsync:   rsync -a -e "ssh -p {port} {opts}" DIR/ alice+demo-shell@127.0.0.1:/tmp/DIR/
    ansible: ansible all -i 127.0.0.1:{port}, -u alice+demo-shell --private-key {k} -m ping
    ssh -J:  ssh -F {ssh_config} demo-shell      (also scp -F {ssh_config} FILE demo-shell:/tmp/)
"""
