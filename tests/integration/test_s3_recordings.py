"""Recordings in an S3-compatible bucket (moto's server on loopback): a closed session's recording is uploaded
with its seek index and the local copy removed; replay, search, HTML export and verify read it back through the
bucket, from any node's config; a changed object is caught (verify) and refused (replay); retention deletes the
objects; and a recording whose upload failed stays on disk and is uploaded when the daemon next starts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.integration.conftest import BastionEnv, own_bastion, start_bastion, stop_bastion, write_config
from tests.integration.test_audit_e2e import exec_session
from tests.support.keys import free_port
from tests.support.s3 import KEY_ID, SECRET, S3Server

pytestmark = pytest.mark.slow
BUCKET = "bastion-recordings"


def s3_config(d: Path, s3: S3Server, bucket: str = BUCKET) -> str:
    secret = d / "s3-secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    return (f"recordings: {{s3: {{bucket: {bucket}, prefix: prod/, endpoint_url: '{s3.url}', region: us-east-1, "
            f"access_key_id: {KEY_ID}, secret_access_key_file: {secret}}}}}\n")


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server(Path("/tmp") / f"moto-{free_port()}.log")
    server.client().create_bucket(Bucket=BUCKET)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def s3_env(bastion_env: BastionEnv, s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionEnv]:
    d = tmp_path_factory.mktemp("s3node")
    with own_bastion(bastion_env, d, extra_top=s3_config(d, s3)) as env:
        yield env


def session(env: BastionEnv, sid: str) -> dict:
    return next(s for s in json.loads(env.bastion("sessions", "list", "--json").stdout) if s["id"] == sid)


def wait_uploaded(env: BastionEnv, sid: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while not (s := session(env, sid))["recording"].startswith("s3://"):
        assert time.monotonic() < deadline, f"never uploaded: {s}\n{env.log.read_text()[-3000:]}"
        time.sleep(0.2)
    return s


def test_recording_goes_to_the_bucket_and_reads_back(s3_env: BastionEnv, s3: S3Server) -> None:
    env = s3_env
    sid = exec_session(env, "echo S3-LINE-ONE; echo S3-LINE-TWO")
    s = wait_uploaded(env, sid)
    key = f"prod/{sid[:4]}/{sid[4:6]}/{sid[6:8]}/{sid}.cast"
    assert s["recording"] == f"s3://{BUCKET}/{key}"
    assert {key, key + ".idx"} <= set(s3.keys(BUCKET))  # the seek index went with it
    assert not list((env.dir / "state" / "recordings").glob(f"*/*/*/{sid}.cast*"))  # the local copy is gone
    body = s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert b"S3-LINE-TWO" in body

    out = env.bastion("replay", sid, "--speed", "100")
    assert out.returncode == 0, out.stderr
    assert "S3-LINE-ONE" in out.stdout and "S3-LINE-TWO" in out.stdout
    hits = json.loads(env.bastion("audit", "search", "S3-LINE-TWO", "--json").stdout)
    assert [h["session"] for h in hits if h["kind"] == "screen"] == [sid]
    html = env.dir / "export.html"
    out = env.bastion("replay", sid, "--html", str(html))
    assert out.returncode == 0, out.stderr
    assert "S3-LINE-TWO" in html.read_text()
    verified = env.bastion("audit", "verify")
    assert verified.returncode == 0 and verified.stdout.startswith("OK"), verified.stdout

    # another node (its own recordings directory, nothing cached) replays it from the bucket
    other = env.dir / "node-b.yaml"
    other.write_text(env.config.read_text().replace("recordings_dir: state/recordings",
                                                    "recordings_dir: node-b/recordings"))
    out = replace(env, config=other).bastion("replay", sid, "--speed", "100")
    assert out.returncode == 0 and "S3-LINE-TWO" in out.stdout, out.stderr
    assert (env.dir / "node-b" / "recordings" / ".s3-cache" / BUCKET / key).is_file()
    assert SECRET not in env.log.read_text()  # the bucket's secret key is never logged


def test_a_changed_or_missing_object_is_caught(s3_env: BastionEnv, s3: S3Server) -> None:
    env = s3_env
    sid = exec_session(env, "echo TAMPER-TARGET")
    ref = wait_uploaded(env, sid)["recording"]
    key = ref.split("/", 3)[3]
    client = s3.client()
    original = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    client.put_object(Bucket=BUCKET, Key=key, Body=original.replace(b"TAMPER-TARGET", b"INNOCENT-TEXT"))
    try:
        bad = env.bastion("audit", "verify")
        assert bad.returncode == 1 and f"session {sid}" in bad.stdout and "was modified" in bad.stdout
        fresh = env.dir / "fresh.yaml"  # a node with no cached copy must not show the altered content
        fresh.write_text(env.config.read_text().replace("recordings_dir: state/recordings",
                                                        "recordings_dir: fresh/recordings"))
        out = replace(env, config=fresh).bastion("replay", sid, "--speed", "100")
        assert out.returncode != 0 and "was modified" in out.stderr and "INNOCENT" not in out.stdout
        client.delete_object(Bucket=BUCKET, Key=key)
        gone = env.bastion("audit", "verify")
        assert gone.returncode == 1 and f"session {sid}" in gone.stdout and "is gone" in gone.stdout
    finally:
        client.put_object(Bucket=BUCKET, Key=key, Body=original)
    assert env.bastion("audit", "verify").returncode == 0


def test_retention_deletes_the_objects(s3_env: BastionEnv, s3: S3Server) -> None:
    env = s3_env
    sid = exec_session(env, "echo SOON-PRUNED")
    key = wait_uploaded(env, sid)["recording"].split("/", 3)[3]
    assert key in s3.keys(BUCKET)
    time.sleep(0.2)
    out = env.bastion("audit", "prune", "--days", "0.000001")
    assert out.returncode == 0 and sid in out.stdout, out.stderr
    assert key not in s3.keys(BUCKET) and key + ".idx" not in s3.keys(BUCKET)
    verified = env.bastion("audit", "verify")
    assert verified.returncode == 0 and "pruned by retention" in verified.stdout


def test_a_failed_upload_keeps_the_recording_and_is_retried(bastion_env: BastionEnv, s3: S3Server,
                                                            tmp_path: Path) -> None:
    base = bastion_env
    (tmp_path / "state").mkdir()
    port = free_port()
    cfg = write_config(tmp_path, port, base.keys, base.target, base.target_key,
                       extra_top=s3_config(tmp_path, s3, bucket="not-yet-made"))
    log = tmp_path / "bastion.out"
    proc = start_bastion(cfg, port, log)
    env = BastionEnv(tmp_path, cfg, port, base.keys, base.target, base.target_key, proc, log)
    try:
        sid = exec_session(env, "echo KEPT-THROUGH-OUTAGE")
        deadline = time.monotonic() + 30
        while "indexing session" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        assert "NoSuchBucket" in log.read_text()
        s = session(env, sid)
        assert not s["recording"].startswith("s3://") and Path(s["recording"]).is_file()  # nothing lost
        out = env.bastion("replay", sid, "--speed", "100")
        assert out.returncode == 0 and "KEPT-THROUGH-OUTAGE" in out.stdout
    finally:
        stop_bastion(proc)
    s3.client().create_bucket(Bucket="not-yet-made")
    proc = start_bastion(cfg, port, log)  # the owed upload is made at start
    env = replace(env, proc=proc)
    try:
        s = wait_uploaded(env, sid)
        assert s["recording"].startswith("s3://not-yet-made/prod/")
        assert not list((tmp_path / "state" / "recordings").glob(f"*/*/*/{sid}.cast*"))
    finally:
        stop_bastion(proc)
