"""A counting reverse proxy in front of a local S3 (moto): the source's own count of what it served.

    with CountingProxy(upstream) as proxy:   clients use proxy.endpoint; proxy.body_bytes(key_part) afterwards

Counts every response body byte sent to clients, per request path, as the store's side of the wire sees it
(not the worker's word). `bytes_per_second` throttles bodies, so a test can kill a client mid-download.
Host headers pass through unchanged, so SigV4 signatures made for the proxy verify at moto.
Must not: be imported by product code.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlparse

SEND_BUFFER = 128 * 1024
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization", "proxy-authenticate"}


class CountingProxy:
    def __init__(self, upstream: str, *, bytes_per_second: float | None = None) -> None:
        parsed = urlparse(upstream)
        self.upstream_host, self.upstream_port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.bytes_per_second = bytes_per_second
        self.sent: dict[str, int] = defaultdict(int)  # "METHOD /path" -> body bytes sent
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def body_bytes(self, contains: str = "", method: str = "GET") -> int:
        with self._lock:
            return sum(n for k, n in self.sent.items() if k.startswith(method + " ") and contains in k)

    def reset(self) -> None:
        with self._lock:
            self.sent.clear()
            self.requests.clear()

    def _count(self, key: str, n: int) -> None:
        with self._lock:
            self.sent[key] += n

    def start(self) -> "CountingProxy":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                # A small send buffer: what is counted as sent is on its way to the client, not megabytes queued in this
                # host's kernel (which a client killed mid-download never receives, but would be counted).
                self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
                super().setup()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn = http.client.HTTPConnection(owner.upstream_host, owner.upstream_port, timeout=120)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    key = f"{self.command} {unquote(self.path.split('?', 1)[0])}"
                    with owner._lock:
                        owner.requests.append(key)
                    self.send_response(resp.status, resp.reason)
                    data = resp.read()
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP and k.lower() != "content-length":
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)) if self.command != "HEAD" else resp.getheader("Content-Length", "0"))
                    self.end_headers()
                    if self.command != "HEAD":
                        self._send_body(key, data)
                finally:
                    conn.close()

            def _send_body(self, key: str, data: bytes) -> None:
                block = 64 * 1024
                for start in range(0, len(data), block):
                    piece = data[start:start + block]
                    self.wfile.write(piece)
                    owner._count(key, len(piece))
                    if owner.bytes_per_second:
                        time.sleep(len(piece) / owner.bytes_per_second)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="counting-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "CountingProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
