"""Moving files to and from S3: parallel, resumable, and checked. S3Transfer owns the thread pool and the buffer
bound that uploads (upload.py) and downloads (download.py) share, so one client never has more than
`settings.workers` part requests in flight whichever way the bytes go.
Must not: know about jobs, manifests or progress beyond a byte-count callback.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kompress_job.io.checksums import VerifiedFiles
from kompress_job.io.download import DownloadItem, DownloadResult, Downloads
from kompress_job.io.s3objects import TransferSettings
from kompress_job.io.upload import UploadItem, UploadResult, Uploads


class S3Transfer:
    """Parallel transfers with one S3 client. Use as a context manager; thread pools end with it."""

    def __init__(self, client: Any, settings: TransferSettings | None = None) -> None:
        self.client = client
        self.settings = settings or TransferSettings()
        self._parts = ThreadPoolExecutor(self.settings.workers, thread_name_prefix="s3-part")
        # Bounds memory: each in-flight upload part is one buffer of part_size bytes.
        self._buffers = threading.BoundedSemaphore(self.settings.workers + self.settings.file_workers)

    def __enter__(self) -> "S3Transfer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._parts.shutdown(wait=True, cancel_futures=True)

    def upload_files(
        self,
        items: list[UploadItem],
        *,
        on_bytes: Callable[[int, int], None] | None = None,
        skip_existing: bool = True,
    ) -> list[UploadResult]:
        """Upload every item; objects already there with the same content are skipped."""
        return Uploads(self.client, self.settings, self._parts, self._buffers).upload_files(items, on_bytes=on_bytes, skip_existing=skip_existing)

    def download_objects(
        self,
        items: list[DownloadItem],
        *,
        verified: VerifiedFiles | None = None,
        on_bytes: Callable[[int, int], None] | None = None,
    ) -> list[DownloadResult]:
        """Download every item into its dest; complete files verified before are kept, partial ones resumed."""
        return Downloads(self.client, self.settings, self._parts).download_objects(items, verified=verified, on_bytes=on_bytes)
