"""S3 transfers against moto's server over HTTP: checksums, skipping, resuming, refusing corrupt data.

Faults are injected at the transport boundary: a botocore `before-send` hook on the client that
fails the Nth request of an operation, as a dropped connection or a killed process would.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import replace

import pytest

from kompress_api.v1alpha1 import S3Access
from kompress_job.io.checksums import file_digests
from kompress_job.io.s3client import make_client
from kompress_job.io.download import download_items
from kompress_job.io.s3objects import head_object, MiB, TransferSettings
from kompress_job.io.transfer import S3Transfer
from kompress_job.io.upload import UploadItem

pytestmark = pytest.mark.integration

SMALL_PARTS = TransferSettings(workers=1, part_size=5 * MiB, threshold=5 * MiB, file_workers=1, range_size=5 * MiB)


class InjectedFault(Exception):
    pass


def fail_after(client, *operations: str, allowed: int) -> list[str]:
    """Let `allowed` requests of `operations` through, then fail every later one. Returns the requests seen."""
    seen: list[str] = []

    def hook(request, **_):
        seen.append(request.url)
        if len(seen) > allowed:
            raise InjectedFault(f"request #{len(seen)} of {operations}")

    for operation in operations:
        client.meta.events.register(f"before-send.s3.{operation}", hook)
    return seen


def count(client, *operations: str) -> list[str]:
    return fail_after(client, *operations, allowed=10**9)


@pytest.fixture
def client(s3):
    return make_client(S3Access(**s3.access()), s3.env("output"), "output", max_attempts=1)


@pytest.fixture
def big_file(tmp_path):
    path = tmp_path / "shard.safetensors"
    path.write_bytes(os.urandom(12 * MiB + 4321))  # three 5 MiB parts, the last one short
    return path


def test_upload_sends_a_sha256_per_part_and_the_store_keeps_the_composite(client, bucket, big_file):
    with S3Transfer(client, SMALL_PARTS) as transfer:
        [result] = transfer.upload_files([UploadItem(big_file, bucket, "m/shard.safetensors")])

    local = file_digests(big_file, 5 * MiB)
    assert result.sha256 == hashlib.sha256(big_file.read_bytes()).hexdigest()
    assert result.s3_checksum == f"{local.composite_sha256}-3"
    remote = head_object(client, bucket, "m/shard.safetensors")
    assert remote.checksum_sha256.split("-")[0] == local.composite_sha256
    assert remote.size == big_file.stat().st_size


def test_upload_skips_objects_already_there_with_the_same_content(client, bucket, big_file, tmp_path):
    small = tmp_path / "config.json"
    small.write_text('{"a": 1}')
    items = [UploadItem(big_file, bucket, "m/shard"), UploadItem(small, bucket, "m/config.json")]
    with S3Transfer(client, SMALL_PARTS) as transfer:
        first = transfer.upload_files(items)
        puts = count(client, "PutObject", "UploadPart")
        again = transfer.upload_files(items)
        small.write_text('{"a": 2}')
        changed = transfer.upload_files(items)

    assert [r.skipped for r in first] == [False, False]
    assert [r.skipped for r in again] == [True, True] and sum(r.bytes_sent for r in again) == 0
    assert [r.skipped for r in changed] == [True, False]
    assert len(puts) == 1  # only the changed config.json went over the wire
    body = client.get_object(Bucket=bucket, Key="m/config.json")["Body"].read()
    assert body == b'{"a": 2}'


def test_an_interrupted_multipart_upload_resumes_without_resending_its_parts(s3, client, bucket, big_file):
    fail_after(client, "UploadPart", allowed=2)
    with S3Transfer(client, SMALL_PARTS) as transfer, pytest.raises(InjectedFault):
        transfer.upload_files([UploadItem(big_file, bucket, "m/shard")])
    assert head_object(client, bucket, "m/shard") is None  # never a half object under the key

    fresh = make_client(S3Access(**s3.access()), s3.env("output"), "output")
    sent = count(fresh, "UploadPart")
    with S3Transfer(fresh, SMALL_PARTS) as transfer:
        [result] = transfer.upload_files([UploadItem(big_file, bucket, "m/shard")])

    assert len(sent) == 1  # parts 1 and 2 were already there
    assert result.bytes_sent == big_file.stat().st_size - 2 * 5 * MiB
    assert fresh.get_object(Bucket=bucket, Key="m/shard")["Body"].read() == big_file.read_bytes()
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_an_upload_that_starts_over_counts_its_bytes_once(s3, client, bucket, big_file):
    """A resumed upload whose completion the store refuses starts clean: progress must not pass 100 %."""
    from botocore.exceptions import ClientError

    fail_after(client, "UploadPart", allowed=2)
    with S3Transfer(client, SMALL_PARTS) as transfer, pytest.raises(InjectedFault):
        transfer.upload_files([UploadItem(big_file, bucket, "m/shard")])

    fresh = make_client(S3Access(**s3.access()), s3.env("output"), "output")
    refused: list[str] = []

    def refuse_first_completion(request, **_):
        if not refused:
            refused.append(request.url)
            raise ClientError({"Error": {"Code": "InvalidPart", "Message": "one or more parts could not be found"}}, "CompleteMultipartUpload")

    fresh.meta.events.register("before-send.s3.CompleteMultipartUpload", refuse_first_completion)
    progress: list[tuple[int, int]] = []
    with S3Transfer(fresh, SMALL_PARTS) as transfer:
        transfer.upload_files([UploadItem(big_file, bucket, "m/shard")], on_bytes=lambda done, total: progress.append((done, total)))

    size = big_file.stat().st_size
    assert refused and fresh.get_object(Bucket=bucket, Key="m/shard")["Body"].read() == big_file.read_bytes()
    assert max(done for done, _ in progress) <= size and progress[-1] == (size, size)


@pytest.mark.parametrize("range_mib", [5, 10, 64])  # one part per range, two, all three
def test_download_verifies_against_the_stores_checksums(client, bucket, big_file, tmp_path, range_mib):
    small = tmp_path / "config.json"
    small.write_text('{"a": 1}')
    with S3Transfer(client, replace(SMALL_PARTS, range_size=range_mib * MiB, workers=4)) as transfer:
        transfer.upload_files([UploadItem(big_file, bucket, "m/shard"), UploadItem(small, bucket, "m/config.json")])
        items = download_items(client, bucket, [("m/shard", "shard"), ("m/config.json", "config.json")], tmp_path / "dl")
        results = transfer.download_objects(items)

    assert {r.rel: r.verified_by for r in results} == {"shard": "composite-sha256", "config.json": "md5"}
    assert (tmp_path / "dl" / "shard").read_bytes() == big_file.read_bytes()
    assert not list((tmp_path / "dl").glob("*.partial*"))


def interrupted_download(s3, client, bucket, big_file, dest):
    """`big_file` uploaded as m/shard, then a download of it into `dest` that fails after its first range."""
    with S3Transfer(client, SMALL_PARTS) as transfer:
        transfer.upload_files([UploadItem(big_file, bucket, "m/shard")])
    failing = make_client(S3Access(**s3.access()), s3.env("output"), "output", max_attempts=1)
    fail_after(failing, "GetObject", allowed=1)
    with S3Transfer(failing, SMALL_PARTS) as transfer, pytest.raises(InjectedFault):
        transfer.download_objects(download_items(failing, bucket, [("m/shard", "shard")], dest))
    return dest


def test_an_interrupted_download_fetches_only_the_missing_ranges(s3, client, bucket, big_file, tmp_path):
    dest = interrupted_download(s3, client, bucket, big_file, tmp_path / "dl")
    assert not (dest / "shard").exists() and (dest / "shard.partial").exists()

    gets = count(client, "GetObject")
    with S3Transfer(client, SMALL_PARTS) as transfer:
        [result] = transfer.download_objects(download_items(client, bucket, [("m/shard", "shard")], dest))
    assert len(gets) == 2  # ranges 2 and 3 of 3
    assert result.verified_by == "composite-sha256"
    assert (dest / "shard").read_bytes() == big_file.read_bytes()


def test_a_corrupted_partial_download_is_caught_and_fetched_again(s3, client, bucket, big_file, tmp_path):
    dest = interrupted_download(s3, client, bucket, big_file, tmp_path / "dl")
    with open(dest / "shard.partial", "r+b") as f:  # a bit flips in the range the first attempt finished
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))

    gets = count(client, "GetObject")
    progress: list[tuple[int, int]] = []
    with S3Transfer(client, SMALL_PARTS) as transfer:
        transfer.download_objects(download_items(client, bucket, [("m/shard", "shard")], dest), on_bytes=lambda d, t: progress.append((d, t)))
    assert len(gets) == 2 + 3  # the missing ranges, then the whole object again after the mismatch
    assert (dest / "shard").read_bytes() == big_file.read_bytes()
    size = big_file.stat().st_size
    assert max(done for done, _ in progress) <= size and progress[-1] == (size, size)  # fetched twice, counted once


def test_a_verified_download_is_not_fetched_again(client, bucket, big_file, tmp_path):
    from kompress_job.io.checksums import VerifiedFiles

    dest = tmp_path / "dl"
    with S3Transfer(client, SMALL_PARTS) as transfer:
        transfer.upload_files([UploadItem(big_file, bucket, "m/shard")])
        transfer.download_objects(download_items(client, bucket, [("m/shard", "shard")], dest), verified=VerifiedFiles(dest))
        gets = count(client, "GetObject")
        [again] = transfer.download_objects(download_items(client, bucket, [("m/shard", "shard")], dest), verified=VerifiedFiles(dest))
    assert again.reused and gets == []


def test_composite_checksum_matches_what_s3_documents():
    # S3's COMPOSITE SHA-256: base64(sha256(concat(sha256(part_i)))), independent of our upload code.
    import tempfile
    from pathlib import Path

    data = os.urandom(11 * MiB)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f"
        path.write_bytes(data)
        parts = [data[i : i + 5 * MiB] for i in range(0, len(data), 5 * MiB)]
        expected = base64.b64encode(hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest()).decode()
        assert file_digests(path, 5 * MiB).composite_sha256 == expected
        assert file_digests(path, 5 * MiB).parts == 3
