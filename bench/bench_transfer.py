"""Upload and download throughput: Kompress's transfer code vs boto3's own upload_file/download_file defaults.

    .venv/bin/python bench/bench_transfer.py [--files 4] [--size-mib 256] [--rounds 2]

Both run against the same local S3 (moto's server, in its own process so it doesn't share our GIL)
and the same files (>= 1 GiB in total by default). The baseline is what boto3 does by default: one
`upload_file` / `download_file` call per file (TransferConfig defaults: 8 MiB parts, 10 threads).
Ours is S3Transfer with its defaults: files in parallel, SHA-256 per part on upload, and every
download verified against the store's checksum. Best of `--rounds` for each. Prints `figure: value`
lines; the goal is a ratio >= 1.0 (no slower than the library default). Files are deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config

from kompress_api.v1alpha1 import S3Access
from kompress_job.io.s3client import make_client
from kompress_job.io.download import DownloadItem
from kompress_job.io.s3objects import head_object, TransferSettings
from kompress_job.io.transfer import S3Transfer
from kompress_job.io.upload import UploadItem

MiB = 1 << 20
SERVER = "import sys, time\nfrom kompress_testing.s3 import MotoS3\ns3 = MotoS3(auth=False).start()\nprint(s3.endpoint, flush=True)\nsys.stdin.read()\n"


def start_server() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    endpoint = proc.stdout.readline().strip()
    if not endpoint.startswith("http"):
        proc.kill()
        raise SystemExit("moto server did not start")
    return proc, endpoint


def make_files(folder: Path, count: int, size: int) -> list[Path]:
    files = []
    block = os.urandom(8 * MiB)
    for i in range(count):
        path = folder / f"model-{i + 1:05d}-of-{count:05d}.safetensors"
        with open(path, "wb") as f:
            left = size
            while left > 0:
                # Vary each block so no two parts are identical (stores may deduplicate).
                chunk = block[: min(left, len(block))]
                f.write(i.to_bytes(4, "little") + left.to_bytes(8, "little") + chunk[12:])
                left -= len(chunk)
        files.append(path)
    return files


def clear(client, bucket: str) -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    proc, endpoint = start_server()
    work = Path(tempfile.mkdtemp(prefix="kompress-bench-transfer-"))
    try:
        (work / "src").mkdir()
        files = make_files(work / "src", args.files, args.size_mib * MiB)
        total = sum(p.stat().st_size for p in files)
        env = {"KOMPRESS_OUTPUT_S3_AWS_ACCESS_KEY_ID": "bench", "KOMPRESS_OUTPUT_S3_AWS_SECRET_ACCESS_KEY": "bench-secret"}
        ours = make_client(S3Access(endpoint=endpoint, path_style=True, region="us-east-1"), env, "output")
        plain = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench-secret", config=Config(s3={"addressing_style": "path"})
        )
        plain.create_bucket(Bucket="bench")
        best = {"upload_boto3": float("inf"), "upload_kompress": float("inf"), "download_boto3": float("inf"), "download_kompress": float("inf")}

        for _ in range(args.rounds):
            # boto3 defaults, one call per file
            best["upload_boto3"] = min(best["upload_boto3"], timed(lambda: [plain.upload_file(str(p), "bench", f"boto3/{p.name}") for p in files]))
            dest = work / "dl-boto3"
            dest.mkdir()
            best["download_boto3"] = min(best["download_boto3"], timed(lambda: [plain.download_file("bench", f"boto3/{p.name}", str(dest / p.name)) for p in files]))
            shutil.rmtree(dest)
            clear(plain, "bench")

            # ours
            with S3Transfer(ours, TransferSettings.from_env()) as transfer:
                items = [UploadItem(p, "bench", f"kompress/{p.name}") for p in files]
                best["upload_kompress"] = min(best["upload_kompress"], timed(lambda: transfer.upload_files(items, skip_existing=False)))
                dest = work / "dl-kompress"
                dest.mkdir()
                downloads = [DownloadItem("bench", head_object(ours, "bench", f"kompress/{p.name}", want_part_size=True), dest / p.name, p.name) for p in files]
                best["download_kompress"] = min(best["download_kompress"], timed(lambda: transfer.download_objects(downloads)))
                assert all((dest / p.name).stat().st_size == p.stat().st_size for p in files)
                shutil.rmtree(dest)
            clear(plain, "bench")

        print(f"files: {args.files} x {args.size_mib} MiB ({total / 2**30:.2f} GiB)")
        print(f"cpus: {os.cpu_count()}")
        for name, seconds in best.items():
            print(f"{name}_MBps: {total / seconds / 1e6:.1f}")
        print(f"upload_ratio: {best['upload_boto3'] / best['upload_kompress']:.2f}")
        print(f"download_ratio: {best['download_boto3'] / best['download_kompress']:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        proc.stdin.close()
        proc.terminate()
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
