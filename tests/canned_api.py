"""A raw HTTP server that answers every HealthImaging call with canned bytes (bad answers)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# (method, path, query) -> (HTTP status, body bytes)
Answer = Callable[[str, str, dict[str, list[str]]], tuple[int, bytes]]


class _Handler(BaseHTTPRequestHandler):
    server: CannedServer

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        url = urlsplit(self.path)
        with self.server.lock:
            self.server.requests += 1
        status, body = self.server.answer(self.command, url.path, parse_qs(url.query))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


class CannedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, answer: Answer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = answer
        self.lock = threading.Lock()
        self.requests = 0

    def respond_with(self, body: bytes, status: int = 200) -> None:
        """Answer every request from now on with these bytes."""

        def fixed(method: str, path: str, query: dict[str, list[str]]) -> tuple[int, bytes]:
            return status, body

        self.answer = fixed

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def canned_api(answer: Answer | bytes) -> Iterator[CannedServer]:
    """Serve `answer` (fixed 200 bytes, or a function of the request) on a free loopback port."""
    server = CannedServer(lambda method, path, query: (500, b"{}"))
    if isinstance(answer, bytes):
        server.respond_with(answer)
    else:
        server.answer = answer
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
