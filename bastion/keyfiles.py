"""Private key files the bastion creates for itself (host keys, demo keys): created once, 0600, never rewritten."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import asyncssh

log = logging.getLogger(__name__)


def ensure_private_key(path: Path, comment: str = "") -> asyncssh.SSHKey:
    """Load the key at ``path``, creating it (ed25519, 0600, with a ``.pub`` beside it) if it does not exist."""
    if path.exists():
        return asyncssh.read_private_key(str(path))
    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment or path.name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.export_private_key())
    path.with_name(path.name + ".pub").write_bytes(key.export_public_key())
    log.info("created key %s (%s)", path, key.get_fingerprint())
    return key


CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
"""Ciphers the bastion speaks, front door and targets alike: AES-GCM only. asyncssh's ChaCha20-Poly1305 sets up two
ciphers and a Poly1305 per packet, and AES-CTR brings a separate MAC (OpenSSH then picks UMAC, computed in Python):
together they took a third to half of the daemon's time per keystroke (bench/latency.py). AES-GCM is one call per
packet and every current SSH client has it (OpenSSH >= 6.2, PuTTY >= 0.76, paramiko, Go's x/crypto)."""
