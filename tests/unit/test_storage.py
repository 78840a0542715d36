"""recorder/storage.py without a server: locations, object keys, the download cache's size bound."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from recorder.storage import CACHE_DIR, RecordingStorage, S3Settings, StorageError, is_remote, split_ref


def test_locations_and_keys(tmp_path: Path) -> None:
    store = RecordingStorage(tmp_path, S3Settings("bucket", prefix="prod/"))
    local = tmp_path / "2026" / "11" / "30" / "s1.cast"
    assert store.key_for(local) == "prod/2026/11/30/s1.cast"
    assert store.key_for(Path("/elsewhere/s2.cast")) == "prod/s2.cast"  # outside the directory: its name only
    assert split_ref("s3://bucket/prod/a/b.cast") == ("bucket", "prod/a/b.cast")
    assert is_remote("s3://b/k") and not is_remote(str(local))
    for bad in ("s3://", "s3://bucket", "s3://bucket/"):
        with pytest.raises(StorageError, match="not an s3://BUCKET/KEY"):
            split_ref(bad)
    # a key never leaves the cache directory, whatever it holds
    assert store._cache_path("s3://bucket/../../etc/passwd") == tmp_path / CACHE_DIR / "bucket" / "etc" / "passwd"


def test_a_local_recording_is_read_in_place(tmp_path: Path) -> None:
    store = RecordingStorage(tmp_path)
    cast = tmp_path / "s.cast"
    cast.write_text('{"version": 2}\n')
    assert store.local(str(cast)) == cast and not store.remote
    assert store.sha256(str(cast)) == hashlib.sha256(b'{"version": 2}\n').hexdigest()
    with pytest.raises(FileNotFoundError):
        store.local(str(tmp_path / "gone.cast"))
    assert store.delete(str(cast)) == [] and not cast.exists()


def test_the_cache_keeps_the_most_recently_used_within_its_size(tmp_path: Path) -> None:
    store = RecordingStorage(tmp_path, S3Settings("b", cache_max_bytes=250))
    d = tmp_path / CACHE_DIR / "b" / "x"
    d.mkdir(parents=True)
    files = {}
    for i, (size, idx) in enumerate(((100, 0), (100, 50), (100, 0)), 1):
        p = d / f"{i}.cast"
        p.write_bytes(b"x" * size)
        if idx:
            Path(f"{p}.idx").write_bytes(b"i" * idx)
        os.utime(p, (1000 + i, 1000 + i))
        files[i] = p
    os.utime(files[1], (2000, 2000))  # 1 was replayed most recently
    removed = store.trim_cache(keep=files[3])
    assert removed == [files[2]] and not Path(f"{files[2]}.idx").exists()  # 350 bytes -> 200: the oldest went
    assert files[1].exists() and files[3].exists()
    assert store.trim_cache() == []  # within bounds now
