"""Where closed recordings live: the recordings directory (default), or an S3-compatible bucket.

A recording is always written to the recordings directory while its session runs. With a bucket configured, it
is uploaded once it has closed and been indexed (the cast and its seek index, ``FILE.cast.idx``), and the local
copies are removed. A recording is named by its location: a local path, or ``s3://BUCKET/KEY``. Readers ask for a
local file (``local``: a bucket's object is downloaded once into a cache under the recordings directory and checked
against the SHA-256 the hash chain holds) or for the digest of what is stored now (``sha256``, streamed, never
cached: what ``bastion audit verify`` compares).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

S3_SCHEME = "s3://"
CACHE_DIR = ".s3-cache"
INDEX_SUFFIX = ".idx"
CHUNK = 1 << 20


class StorageError(Exception):
    """A recording cannot be stored, found or read (the message says which and why)."""


def sha256_of(chunks: Iterable[bytes]) -> str:
    """The hex SHA-256 of a stream of chunks."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def file_chunks(f: BinaryIO) -> Iterable[bytes]:
    """A binary file's content, a chunk at a time."""
    return iter(lambda: f.read(CHUNK), b"")


@dataclass(frozen=True)
class S3Settings:
    """A bucket (and key prefix) on S3 or an S3-compatible server (``endpoint_url``)."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None  # None: boto3's own chain (environment, instance role)
    cache_max_bytes: int = 2 << 30  # downloaded copies kept under recordings_dir/.s3-cache, least recently used go


def is_remote(ref: str) -> bool:
    return ref.startswith(S3_SCHEME)


def split_ref(ref: str) -> tuple[str, str]:
    """``s3://BUCKET/KEY`` → (BUCKET, KEY)."""
    bucket, _, key = ref[len(S3_SCHEME):].partition("/")
    if not bucket or not key:
        raise StorageError(f"{ref}: not an s3://BUCKET/KEY location")
    return bucket, key


class RecordingStorage:
    """The recordings directory ``root``, and the bucket when ``s3`` is given."""

    def __init__(self, root: Path, s3: S3Settings | None = None) -> None:
        self.root = root
        self.s3 = s3
        self._client: Any = None

    @property
    def remote(self) -> bool:
        """Whether closed recordings go to a bucket."""
        return self.s3 is not None

    def client(self) -> Any:
        if self._client is None:
            if self.s3 is None:
                raise StorageError("no S3 storage is configured (recordings.s3)")
            try:
                import boto3
                from botocore.config import Config as BotoConfig
            except ImportError:
                raise StorageError("recordings.s3 needs boto3: pip install 'bastion[s3]'") from None
            self._client = boto3.client(
                "s3", endpoint_url=self.s3.endpoint_url, region_name=self.s3.region or "us-east-1",
                aws_access_key_id=self.s3.access_key_id, aws_secret_access_key=self.s3.secret_access_key,
                config=BotoConfig(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10,
                                  read_timeout=60))
        return self._client

    def _s3_call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kw)
        except ClientError as e:
            err = e.response.get("Error", {})
            code = str(err.get("Code", "error"))
            if code in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(f"{what}: no such object") from None
            raise StorageError(f"{what}: {code}: {err.get('Message', '')}".rstrip(": ")) from None
        except BotoCoreError as e:
            raise StorageError(f"{what}: {e}") from None

    def key_for(self, local: Path) -> str:
        """The object key of a recording file: the prefix, then its path under the recordings directory."""
        assert self.s3 is not None
        try:
            rel = local.resolve().relative_to(self.root.resolve())
        except ValueError:
            rel = Path(local.name)
        return f"{self.s3.prefix}{rel.as_posix()}"

    def upload(self, local: Path) -> str:
        """Put a closed recording (and its seek index, if built) in the bucket and return its new location. The
        cast goes last, so its presence means the upload is whole. The local copies stay (``discard_local``, once
        the new location is recorded)."""
        assert self.s3 is not None
        key = self.key_for(local)
        client = self.client()
        idx = Path(f"{local}{INDEX_SUFFIX}")
        if idx.is_file():
            self._s3_call(f"uploading {idx}", client.upload_file, str(idx), self.s3.bucket, key + INDEX_SUFFIX)
        self._s3_call(f"uploading {local}", client.upload_file, str(local), self.s3.bucket, key,
                      ExtraArgs={"ContentType": "application/x-asciicast"})
        return f"{S3_SCHEME}{self.s3.bucket}/{key}"

    @staticmethod
    def discard_local(local: Path) -> None:
        """Remove the local copies of an uploaded recording."""
        for p in (Path(f"{local}{INDEX_SUFFIX}"), local):
            p.unlink(missing_ok=True)

    def _cache_path(self, ref: str) -> Path:
        bucket, key = split_ref(ref)
        safe = [part for part in key.split("/") if part not in ("", ".", "..")]
        return self.root / CACHE_DIR / bucket / Path(*safe)

    def local(self, ref: str, sha256: str | None = None) -> Path:
        """A local file with the recording's content: the file itself, or the bucket's object downloaded into the
        cache (its seek index too, when there is one). A download whose SHA-256 differs from ``sha256`` is refused.
        """
        if not is_remote(ref):
            path = Path(ref)
            if not path.is_file():
                raise FileNotFoundError(f"{ref}: no such recording file")
            return path
        dest = self._cache_path(ref)
        if dest.is_file():
            os.utime(dest)  # recently used: trimmed last
            return dest
        bucket, key = split_ref(ref)
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        got = self._download(bucket, key, dest.parent)
        with got.open("rb") as f:
            digest = sha256_of(file_chunks(f))
        if sha256 and digest != sha256:
            got.unlink(missing_ok=True)
            raise StorageError(f"{ref}: the stored object was modified (its SHA-256 is {digest[:16]}..., the "
                               f"chain holds {sha256[:16]}...); run bastion audit verify")
        try:
            idx = self._download(bucket, key + INDEX_SUFFIX, dest.parent)
            os.replace(idx, f"{dest}{INDEX_SUFFIX}")
        except FileNotFoundError:
            pass  # no keyframes: the player builds them
        except StorageError:
            pass
        os.replace(got, dest)
        self.trim_cache(keep=dest)
        return dest

    def trim_cache(self, keep: Path | None = None) -> list[Path]:
        """Remove the least recently used downloaded copies until the cache is within its size; the removed."""
        limit = self.s3.cache_max_bytes if self.s3 is not None else 0
        casts = []
        for p in (self.root / CACHE_DIR).rglob("*.cast"):
            try:
                st = p.stat()
                idx = Path(f"{p}{INDEX_SUFFIX}")
                size = st.st_size + (idx.stat().st_size if idx.is_file() else 0)
            except OSError:
                continue
            casts.append((st.st_mtime, size, p))
        total = sum(size for _, size, _ in casts)
        removed = []
        for _, size, p in sorted(casts):
            if total <= limit:
                break
            if keep is not None and p == keep:
                continue
            for f in (p, Path(f"{p}{INDEX_SUFFIX}")):
                f.unlink(missing_ok=True)
            total -= size
            removed.append(p)
        return removed

    def _download(self, bucket: str, key: str, into: Path) -> Path:
        fd, tmp = tempfile.mkstemp(dir=into, prefix=".part-")
        os.close(fd)
        try:
            self._s3_call(f"s3://{bucket}/{key}", self.client().download_file, bucket, key, tmp)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Path(tmp)

    def sha256(self, ref: str) -> str:
        """The SHA-256 of the recording as stored now (a bucket's object is streamed, not cached)."""
        if not is_remote(ref):
            with open(ref, "rb") as f:
                return sha256_of(file_chunks(f))
        bucket, key = split_ref(ref)
        obj = self._s3_call(ref, self.client().get_object, Bucket=bucket, Key=key)
        body = obj["Body"]
        try:
            return self._s3_call(ref, sha256_of, body.iter_chunks(CHUNK))
        finally:
            body.close()

    def delete(self, ref: str) -> list[str]:
        """Remove a recording and its seek index (and a cached copy); the problems, if any, as messages."""
        problems = []
        if not is_remote(ref):
            targets = [Path(ref), Path(ref + INDEX_SUFFIX)]
        else:
            bucket, key = split_ref(ref)
            for k in (key, key + INDEX_SUFFIX):
                try:
                    self._s3_call(f"s3://{bucket}/{k}", self.client().delete_object, Bucket=bucket, Key=k)
                except (StorageError, FileNotFoundError) as e:
                    problems.append(str(e))
            cached = self._cache_path(ref)
            targets = [cached, Path(f"{cached}{INDEX_SUFFIX}")]
        for p in targets:
            try:
                p.unlink(missing_ok=True)
            except OSError as e:
                problems.append(f"cannot remove {p}: {e.strerror}")
        return problems
