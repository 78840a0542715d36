"""Indexing one closed recording: its search index and seek keyframes, then (with a bucket configured) its upload.

The daemon runs this in a niced child process (``python -m bastion.audit.indexing --config FILE SESSION``), one at a
time, so that reading a large recording never holds the daemon's event loop; ``bastion audit index`` runs the same
function in the foreground.
"""

from __future__ import annotations

import argparse
import sys

from bastion.config import ConfigError, load_config
from bastion.store.db import Store
from bastion.store.search import index_recording
from recorder.seekindex import build, save
from recorder.storage import RecordingStorage, StorageError, is_remote
from recorder.transferlog import is_transfer_log

UPLOAD_FAILED = 3
"""The indexer's exit status when the recording was indexed but not uploaded (the daemon counts it: metrics)."""


class UploadFailed(StorageError):
    """The recording could not be put in the bucket (it stays on disk; the next start uploads it)."""


def index_session(store: Store, sid: str, storage: RecordingStorage, *, keyframes: bool = True) -> int:
    """Build the search index and the seek keyframes of one session's recording; with a bucket configured, then
    upload it there and remove the local copy. The number of lines indexed."""
    row = store.session(sid)
    if row is None or not row.recording:
        raise LookupError(f"no recording for session {sid}")
    ref = row.recording
    path = storage.local(ref, row.sha256)
    n = index_recording(store, sid, str(path))
    if is_remote(ref):
        return n
    if keyframes and not is_transfer_log(path):  # a transfer log has no screen to seek in
        save(build(path), path)
    if storage.remote and row.sha256:  # closed and chained: its content is final
        try:
            uploaded = storage.upload(path)
        except Exception as e:  # boto3's transfer manager raises its own S3UploadFailedError, not a StorageError
            raise UploadFailed(str(e)) from e
        store.set_recording_path(sid, uploaded)
        storage.discard_local(path)
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bastion.audit.indexing", description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("session")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, check_files=False)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    store = Store(cfg.database_url)
    try:
        index_session(store, args.session, cfg.recording_storage())
    except UploadFailed as e:
        print(e, file=sys.stderr)
        return UPLOAD_FAILED
    except (LookupError, OSError, StorageError) as e:
        print(e, file=sys.stderr)
        return 1
    finally:
        store.engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
