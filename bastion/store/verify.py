"""Tamper evidence: check the recordings' and audit events' hash chains, the recording files against their hashes,
and signed chain heads; sign the current heads with an ed25519 key.

What the chains catch: a changed byte in a recording, a deleted or replaced recording file, an altered, deleted or
reordered row in the middle of a chain. What they cannot catch alone: someone with write access to the database
rewriting a whole chain from some point on, or cutting its end together with the head row. Signed heads close that
gap up to the newest signature: keep the private key away from the database (the daemon signs after each session).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select

from bastion.store.chain import AUDIT, GENESIS, RECORDINGS, audit_link, head_message, recording_link
from bastion.store.db import Store, now
from bastion.store.models import AuditEvent, ChainHead, ChainSignature, Recording, Session
from recorder.archive import archive_root, archived_path, file_sha256
from recorder.storage import RecordingStorage, StorageError, is_remote
from recorder.transferlog import is_transfer_log, iter_records

__all__ = ["Problem", "Report", "load_private_key", "load_public_key", "sign_heads", "verify"]


@dataclass(frozen=True)
class Problem:
    """One finding: ``kind`` is modified, missing, altered, reordered, truncated, unchained or signature."""

    kind: str
    chain: str
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind.upper():<10} {self.chain}: {self.where}: {self.detail}"


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "counts": self.counts, "notes": self.notes,
                "problems": [p.__dict__ for p in self.problems]}


# -- keys ------------------------------------------------------------------------------------------------------
def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An ed25519 private key from an OpenSSH (``ssh-keygen -t ed25519 -N ''``) or PEM (PKCS#8) file."""
    data = path.read_bytes()
    try:
        key: Any = (serialization.load_ssh_private_key(data, None) if b"OPENSSH PRIVATE KEY" in data
                    else serialization.load_pem_private_key(data, None))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: not an unencrypted ed25519 private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: an ed25519 key is needed, this is {type(key).__name__}")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An ed25519 public key from an OpenSSH ``.pub`` line or a PEM file (or the public half of a private key)."""
    data = path.read_bytes()
    try:
        if b"PRIVATE KEY" in data:
            return load_private_key(path).public_key()
        key: Any = (serialization.load_pem_public_key(data) if data.startswith(b"-----")
                    else serialization.load_ssh_public_key(data.strip()))
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise ValueError(f"{path}: not an ed25519 public key ({e})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: an ed25519 key is needed, this is {type(key).__name__}")
    return key


def key_id(pub: Ed25519PublicKey) -> str:
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def sign_heads(store: Store, key: Ed25519PrivateKey) -> list[dict[str, Any]]:
    """Sign the current head of each chain; returns what was signed."""
    kid = key_id(key.public_key())
    out = []
    with store.tx() as s:
        for head in s.scalars(select(ChainHead).order_by(ChainHead.name)):
            sig = base64.b64encode(key.sign(head_message(head.name, head.seq, head.head))).decode()
            s.add(ChainSignature(chain=head.name, seq=head.seq, head=head.head, key_id=kid, signature=sig,
                                 signed_at=now()))
            out.append({"chain": head.name, "seq": head.seq, "head": head.head, "key_id": kid})
    return out


# -- verification ----------------------------------------------------------------------------------------------
def verify(store: Store, *, public_key: Ed25519PublicKey | None = None, check_files: bool = True,
           storage: RecordingStorage | None = None) -> Report:
    """Walk both chains, hash every recording (as ``storage`` keeps it now; default: local files), and check the
    newest signature of each chain."""
    rep = Report()
    storage = storage or RecordingStorage(Path("/"))
    with store.tx() as s:
        heads = {h.name: h for h in s.scalars(select(ChainHead))}
        rec_links = _verify_recordings(s, rep, heads.get(RECORDINGS), check_files, storage)
        audit_links = _verify_audit(s, rep, heads.get(AUDIT))
        for name, links in ((RECORDINGS, rec_links), (AUDIT, audit_links)):
            _verify_signature(s, rep, name, links, public_key)
    return rep


def _follows(rep: Report, chain: str, where: str, seq: int, expected: int, stored_prev: str | None, prev: str,
             what: str) -> None:
    """Check one link's position and its link to the previous entry (a gap, or a reorder/replacement)."""
    if seq != expected:
        span = f"position {expected}" if seq == expected + 1 else f"positions {expected}..{seq - 1}"
        rep.problems.append(Problem("missing", chain, span, "entries were deleted from the chain"))
    elif stored_prev != prev:
        rep.problems.append(Problem("reordered", chain, where, f"does not follow the previous {what}: "
                                                               f"{what}s were reordered or replaced"))


def _verify_recordings(s: Any, rep: Report, head: ChainHead | None, check_files: bool,
                       storage: RecordingStorage) -> dict[int, str]:
    links: dict[int, str] = {}
    prev, expected = GENESIS, 1
    n = pruned = 0
    for rec in s.scalars(select(Recording).where(Recording.seq.is_not(None)).order_by(Recording.seq)):
        n += 1
        where = f"session {rec.session_id} (#{rec.seq})"
        _follows(rep, RECORDINGS, where, rec.seq, expected, rec.prev_chain, prev, "entry")
        if rec.chain != recording_link(rec.prev_chain or "", rec.session_id, rec.sha256 or ""):
            rep.problems.append(Problem("altered", RECORDINGS, where,
                                        "the stored hash or session id was changed after the recording closed"))
        links[rec.seq] = rec.chain or ""
        prev, expected = rec.chain or "", rec.seq + 1
        if rec.pruned_at is not None:
            pruned += 1
            continue
        if not check_files:
            continue
        path = rec.path
        try:
            digest = storage.sha256(path)
        except FileNotFoundError:
            rep.problems.append(Problem("missing", RECORDINGS, where, f"the recording {path} is gone"))
            continue
        except OSError as e:
            rep.problems.append(Problem("missing", RECORDINGS, where, f"cannot read {path}: {e.strerror or e}"))
            continue
        except StorageError as e:
            rep.problems.append(Problem("unreadable", RECORDINGS, where, str(e)))
            continue
        if digest != rec.sha256:
            rep.problems.append(Problem("modified", RECORDINGS, where,
                                        f"{path} was modified: its SHA-256 is {digest[:16]}..., "
                                        f"the chain holds {(rec.sha256 or '')[:16]}..."))
        elif is_transfer_log(path) and not is_remote(path):
            _verify_archived(rep, where, Path(path), archive_root(storage.root))
    _check_head(rep, RECORDINGS, head, expected - 1, prev)
    for sid, outcome in s.execute(select(Recording.session_id, Session.outcome)
                                  .join(Session, Session.id == Recording.session_id)
                                  .where(Recording.seq.is_(None))).all():
        if outcome == "active":
            rep.notes.append(f"session {sid} is active: its recording joins the chain when it closes")
        else:
            rep.problems.append(Problem("unchained", RECORDINGS, f"session {sid}",
                                        f"the session is {outcome} but its recording was never hashed"))
    rep.counts[RECORDINGS] = n
    if pruned:
        rep.notes.append(f"{pruned} recording(s) pruned by retention: chained, files not checked")
    return links


def _verify_audit(s: Any, rep: Report, head: ChainHead | None) -> dict[int, str]:
    links: dict[int, str] = {}
    prev, expected, n = GENESIS, 1, 0
    for ev in _batched(s, select(AuditEvent).where(AuditEvent.seq.is_not(None)).order_by(AuditEvent.seq)):
        n += 1
        where = f"event #{ev.seq} ({ev.action} by {ev.actor})"
        _follows(rep, AUDIT, where, ev.seq, expected, ev.prev_hash, prev, "event")
        link = audit_link(ev.prev_hash or "", ev.seq, ts=ev.ts, actor=ev.actor, action=ev.action,
                          outcome=ev.outcome, resource=ev.resource, session_id=ev.session_id,
                          client_addr=ev.client_addr, detail=ev.detail)
        if link != ev.hash:
            rep.problems.append(Problem("altered", AUDIT, where, "the event was changed after it was written"))
        links[ev.seq] = ev.hash or ""
        prev, expected = ev.hash or "", ev.seq + 1
    _check_head(rep, AUDIT, head, expected - 1, prev)
    unchained = s.scalar(select(AuditEvent.id).where(AuditEvent.seq.is_(None)).limit(1))
    if unchained is not None:
        rep.problems.append(Problem("unchained", AUDIT, f"event id {unchained}",
                                    "events without a chain position were inserted behind the bastion's back"))
    rep.counts[AUDIT] = n
    return links


def _batched(s: Any, stmt: Any, size: int = 5000) -> Iterator[Any]:
    yield from s.scalars(stmt.execution_options(yield_per=size))


def _check_head(rep: Report, chain: str, head: ChainHead | None, last: int, link: str) -> None:
    if head is None:
        if last:
            rep.problems.append(Problem("truncated", chain, "head", "the chain head row is gone"))
        return
    if head.seq != last or head.head != (link if last else GENESIS):
        rep.problems.append(Problem("truncated", chain, f"position {last}",
                                    f"the chain head says position {head.seq} ({head.head[:16]}...): "
                                    "entries at the end were removed or rewritten"))


def _verify_signature(s: Any, rep: Report, chain: str, links: dict[int, str],
                      public_key: Ed25519PublicKey | None) -> None:
    sigs = list(s.scalars(select(ChainSignature).where(ChainSignature.chain == chain)
                          .order_by(ChainSignature.id.desc())))
    if public_key is None:
        if sigs:
            rep.notes.append(f"{chain}: {len(sigs)} signed head(s) not checked (give --public-key)")
        return
    kid = key_id(public_key)
    mine = [g for g in sigs if g.key_id == kid]
    if not mine:
        rep.problems.append(Problem("signature", chain, "head", f"no head signed by {kid}"))
        return
    for g in mine:  # the newest valid one counts; forged or broken ones are reported
        try:
            public_key.verify(base64.b64decode(g.signature), head_message(chain, g.seq, g.head))
        except (InvalidSignature, ValueError):
            rep.problems.append(Problem("signature", chain, f"signature {g.id}",
                                        f"does not verify with {kid}: it was forged or altered"))
            continue
        if g.seq == 0:
            return
        if g.seq not in links:
            rep.problems.append(Problem("truncated", chain, f"position {g.seq}",
                                        f"a head signed {g.signed_at:%Y-%m-%d %H:%M:%S} reaches position {g.seq}, "
                                        f"the chain ends at {max(links, default=0)}"))
        elif links[g.seq] != g.head:
            rep.problems.append(Problem("altered", chain, f"position {g.seq}",
                                        "differs from the head signed then: the chain was rewritten"))
        else:
            rep.notes.append(f"{chain}: head #{g.seq} signed by {kid} at {g.signed_at:%Y-%m-%d %H:%M:%S} matches")
        return


def _verify_archived(rep: Report, where: str, log: Path, root: Path) -> None:
    """Each file a (verified, hence trustworthy) transfer log says was archived is there, with its SHA-256."""
    for rec in iter_records(log):
        sha = rec.get("sha256")
        if not rec.get("archived") or not isinstance(sha, str):
            continue
        try:
            kept = archived_path(root, sha)
            digest = file_sha256(kept)
        except ValueError:
            rep.problems.append(Problem("altered", RECORDINGS, where, "an archived file's hash is not a SHA-256"))
            continue
        except OSError:
            rep.problems.append(Problem("missing", RECORDINGS, where,
                                        f"the archived contents of {rec.get('path')} ({sha[:16]}...) are gone"))
            continue
        if digest != sha:
            rep.problems.append(Problem("modified", RECORDINGS, where,
                                        f"the archived contents of {rec.get('path')} were modified: {kept} hashes to "
                                        f"{digest[:16]}..., the log holds {sha[:16]}..."))
