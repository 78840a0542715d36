"""OIDC identities and the SSH keys bound to them, in the store.

A user row per (issuer, subject); its ``name`` is what audit events, sessions and approvals show (unique: a name
already taken by a local user or another subject gets a suffix from the subject). A key binding ties a *proven*
public key to that user until it expires or is revoked.
"""

from __future__ import annotations

import builtins
import hashlib
import re
from datetime import timedelta

from sqlalchemy import or_, select

from bastion.store.db import Store, _aware, now
from bastion.store.models import KeyBinding, User
from bastion.store.rows import BindingRecord, BoundKey

NAME_OK = re.compile(r"[^A-Za-z0-9._-]")


def clean_name(raw: str) -> str:
    """A display/audit name from a claim (email local part allowed through as ``a.b``)."""
    base = raw.split("@", 1)[0] if "@" in raw else raw
    name = NAME_OK.sub("-", base)[:48].strip("-.") or "user"
    return name


class Identities:
    """Users from OIDC and their key bindings."""

    def __init__(self, store: Store, reserved: set[str] | None = None):
        self.store = store
        self.reserved = set(reserved or ())  # local user names from the config: never handed to an OIDC subject

    def upsert(self, *, issuer: str, subject: str, username: str, email: str | None, groups: list[str]) -> str:
        """Record a login of (issuer, subject); return its bastion name (stable once assigned)."""
        with self.store.tx() as s:
            u = s.scalar(select(User).where(User.issuer == issuer, User.subject == subject))
            if u is None:
                name = clean_name(username)
                taken = name in self.reserved or s.scalar(select(User.id).where(User.name == name)) is not None
                if taken:
                    name = f"{name}-{hashlib.sha256(f'{issuer} {subject}'.encode()).hexdigest()[:6]}"
                u = User(name=name, source="oidc", created_at=now(), issuer=issuer, subject=subject)
                s.add(u)
            u.email, u.groups, u.last_login_at = email, list(groups), now()
            return u.name

    def bind(self, name: str, fingerprint: str, public_key: str, ttl: float, client_addr: str) -> int:
        """Bind a proven key to user ``name`` for ``ttl`` seconds (earlier bindings of that key end)."""
        with self.store.tx() as s:
            u = s.scalar(select(User).where(User.name == name))
            if u is None:
                raise KeyError(name)
            t = now()
            for old in s.scalars(select(KeyBinding).where(KeyBinding.fingerprint == fingerprint,
                                                          KeyBinding.revoked_at.is_(None))):
                old.revoked_at, old.revoked_by = t, "rebound"
            b = KeyBinding(user_id=u.id, fingerprint=fingerprint, public_key=public_key, created_at=t,
                           expires_at=t + timedelta(seconds=ttl), client_addr=client_addr)
            s.add(b)
            s.flush()
            return b.id

    def lookup(self, fingerprint: str, public_key: str) -> BoundKey | None:
        """The live binding of a key (not expired, not revoked): its user's name, groups, issuer, subject."""
        with self.store.tx() as s:
            t = now()
            rows = s.execute(select(KeyBinding, User).join(User, User.id == KeyBinding.user_id).where(
                KeyBinding.fingerprint == fingerprint, KeyBinding.revoked_at.is_(None))).all()
            for b, u in rows:
                if b.public_key != public_key or (b.expires_at is not None and _aware(b.expires_at) <= t):
                    continue
                b.last_used_at = t
                return BoundKey(binding=b.id, name=u.name, groups=tuple(u.groups or ()), issuer=u.issuer,
                                subject=u.subject, expires_at=_aware(b.expires_at))
            return None

    def list(self, *, user: str | None = None, include_inactive: bool = False) -> builtins.list[BindingRecord]:
        with self.store.tx() as s:
            q = select(KeyBinding, User).join(User, User.id == KeyBinding.user_id).order_by(KeyBinding.id)
            if user:
                q = q.where(User.name == user)
            t = now()
            out = []
            for b, u in s.execute(q).all():
                exp = _aware(b.expires_at)
                state = "revoked" if b.revoked_at else "expired" if exp is not None and exp <= t else "active"
                if state != "active" and not include_inactive:
                    continue
                out.append(BindingRecord(id=b.id, user=u.name, issuer=u.issuer, subject=u.subject,
                                         fingerprint=b.fingerprint, created_at=_aware(b.created_at), expires_at=exp,
                                         state=state, last_used_at=_aware(b.last_used_at), client_addr=b.client_addr))
            return out

    def revoke(self, *, by: str, binding: int | None = None, user: str | None = None,
               fingerprint: str | None = None) -> builtins.list[int]:  # `list` here is the method above
        """Revoke live bindings by id, user or fingerprint; the ids revoked."""
        if binding is None and user is None and fingerprint is None:
            raise ValueError("say which bindings to revoke")
        with self.store.tx() as s:
            q = select(KeyBinding).join(User, User.id == KeyBinding.user_id).where(KeyBinding.revoked_at.is_(None))
            if binding is not None:
                q = q.where(KeyBinding.id == binding)
            if user is not None:
                q = q.where(User.name == user)
            if fingerprint is not None:
                q = q.where(or_(KeyBinding.fingerprint == fingerprint,
                                KeyBinding.fingerprint == f"SHA256:{fingerprint.removeprefix('SHA256:')}"))
            t, ids = now(), []
            for b in s.scalars(q):
                b.revoked_at, b.revoked_by = t, by
                ids.append(b.id)
            return ids
