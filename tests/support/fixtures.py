"""Pytest fixtures for the support package; use with ``from tests.support.fixtures import sshd_target``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.keys import make_keypair
from tests.support.sshd import SshdTarget, start_sshd


@dataclass
class SshdWithKey:
    """A running sshd and the client key it trusts."""

    sshd: SshdTarget
    client_key: Path
    client_key_public: str


@pytest.fixture(scope="module")
def sshd_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdWithKey]:
    """A module-wide real sshd on 127.0.0.1 trusting a fresh ``target_key`` (as the current user)."""
    d = tmp_path_factory.mktemp("sshd_target")
    key, pub = make_keypair(d / "target_key", "target_key")
    with start_sshd(d / "sshd", authorized_keys=[pub]) as sshd:
        yield SshdWithKey(sshd, key, pub)
