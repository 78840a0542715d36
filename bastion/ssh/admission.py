"""Who may knock: connection limits per daemon and per source address, and the local users' public keys."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence

import asyncssh

log = logging.getLogger(__name__)


class ConnectionCounter:
    """Open connections, in all and per source address, against ``limits``."""

    def __init__(self) -> None:
        self.total = 0
        self.per_ip: Counter[str] = Counter()

    def admit(self, ip: str, max_total: int, max_per_source: int) -> bool:
        """Count one more connection from ``ip`` unless a limit is reached (then nothing is counted)."""
        if self.total >= max_total or self.per_ip[ip] >= max_per_source:
            return False
        self.total += 1
        self.per_ip[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self.total -= 1
        self.per_ip[ip] -= 1
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]


class UserKeys:
    """The local users' authorized keys, parsed once per config (start and reload)."""

    def __init__(self, user_keys: Mapping[str, Sequence[str]]) -> None:
        self._keys: dict[str, set[bytes]] = {}
        for name, lines in user_keys.items():
            keys: set[bytes] = set()
            for line in lines:
                try:
                    keys.add(asyncssh.import_public_key(line).public_data)
                except (ValueError, asyncssh.KeyImportError):
                    log.warning("ignoring unparsable key of user %s", name)
            self._keys[name] = keys

    def allowed(self, username: str, key: asyncssh.SSHKey) -> bool:
        return key.public_data in self._keys.get(username, set())
