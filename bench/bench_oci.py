"""Pushing a checkpoint as an OCI image: kompress_job.io.oci against the CNCF distribution registry on loopback.

    .venv/bin/python bench/bench_oci.py [--files 4] [--size-mib 256]

The first push sends every layer (each file hashed once, then streamed as its tar layer, in 64 MiB chunks, 4 files at
a time); the second push of the same files to another tag finds every layer in the repository and sends none (only the
manifest, which is the same, and the tag). The baseline for the first is the raw throughput of one monolithic blob
upload of the same bytes with requests (what the registry and loopback allow). Prints `figure: value` lines; files and
the registry are removed at the end. Needs `make registry busybox`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from kompress_api.v1alpha1 import Output
from kompress_job.io.oci import OciDestination
from kompress_testing.registry import LocalRegistry, busybox_binary

MiB = 1 << 20


def push(registry: LocalRegistry, env: dict[str, str], files: list[tuple[Path, str]], tag: str) -> tuple[float, int]:
    output = Output(uri=f"oci://{registry.host}/bench/model:{tag}", oci={"credentialsSecret": "bench", "insecure": True})
    started = time.monotonic()
    destination = OciDestination(output, env, log=lambda message: None)
    destination.check_writable()
    stored = destination.upload(files)
    destination.put_text("kompress.json", "{}")
    destination.finish()
    return time.monotonic() - started, sum(s.sent for s in stored)


def raw_upload(registry: LocalRegistry, path: Path) -> float:
    session = registry.session
    data = path.read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    started = time.monotonic()
    location = session.post(f"{registry.url}/v2/bench/raw/blobs/uploads/").headers["Location"]
    url = location if location.startswith("http") else registry.url + location
    response = session.put(url + ("&" if "?" in url else "?") + f"digest={digest}", data=data, headers={"Content-Type": "application/octet-stream"})
    response.raise_for_status()
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--size-mib", type=int, default=256)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-oci-"))
    try:
        folder = work / "checkpoint"
        folder.mkdir()
        files = []
        for i in range(args.files):
            path = folder / f"model-{i + 1:05d}-of-{args.files:05d}.safetensors"
            path.write_bytes(os.urandom(args.size_mib * MiB))
            files.append((path, path.name))
        total = args.files * args.size_mib * MiB
        with LocalRegistry(work / "registry") as registry:
            auth = work / "auth.json"
            auth.write_text(registry.docker_config())
            env = {"KOMPRESS_OUTPUT_OCI_AUTH": str(auth), "KOMPRESS_OCI_BUSYBOX": str(busybox_binary())}
            first, sent = push(registry, env, files, "v1")
            second, resent = push(registry, env, files, "v2")
            raw = raw_upload(registry, files[0][0])
        print(f"bytes: {total}")
        print(f"first push MB/s: {total / first / 1e6:.0f} ({first:.1f} s, {sent} bytes of files sent)")
        print(f"raw single-blob upload MB/s: {args.size_mib * MiB / raw / 1e6:.0f}")
        print(f"ratio first push / raw: {(total / first) / (args.size_mib * MiB / raw):.2f}")
        print(f"second push (every layer already there) s: {second:.2f} ({resent} bytes of files sent)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
