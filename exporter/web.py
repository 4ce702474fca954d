"""The HTTP server: /metrics from the last rendering, health, readiness, reload, a landing page."""

from __future__ import annotations

import html
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from exporter import __version__
from exporter.metrics.exposition import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    ExpositionCache,
)

log = logging.getLogger(__name__)


class Authenticator(Protocol):
    """Checks an Authorization header (basic auth from the web config)."""

    def enabled(self) -> bool:
        """Tell whether requests must authenticate."""

    def check(self, authorization_header: str | None) -> bool:
        """Tell whether the header carries valid credentials."""


@dataclass(frozen=True, slots=True)
class WebApp:
    """What the handler serves; callables are read per request, so they see the latest state."""

    exposition: ExpositionCache
    is_ready: Callable[[], bool]
    health: Callable[[], str | None]  # None when healthy, else why it is degraded
    reload: Callable[[], str | None] | None = None  # None: /-/reload is off; returns an error
    authenticator: Authenticator | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # from the web config


def wants_openmetrics(accept: str | None) -> bool:
    """Tell whether an Accept header prefers OpenMetrics, as Prometheus's scrapes do."""
    if not accept:
        return False
    return any(
        part.split(";")[0].strip() == "application/openmetrics-text" for part in accept.split(",")
    )


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Tell whether an Accept-Encoding header allows gzip."""
    if not accept_encoding:
        return False
    for part in accept_encoding.split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() == "gzip":
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


PROBE_PATHS = frozenset({"/-/healthy", "/-/ready"})

LANDING = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>HealthImaging exporter</title></head>
<body><h1>HealthImaging exporter</h1><p>Version {version}</p>
<ul><li><a href="metrics">metrics</a></li><li><a href="-/healthy">health</a></li>
<li><a href="-/ready">readiness</a></li></ul></body></html>
"""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = f"healthimaging-exporter/{__version__}"

    def log_message(self, format: str, *args: object) -> None:
        # Request lines can carry tokens in query strings; only errors are logged, by us.
        pass

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**self.server.app.headers, **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _authorized(self) -> bool:
        auth = self.server.app.authenticator
        if auth is None or not auth.enabled():
            return True
        # Liveness and readiness reveal nothing, and kubelet probes cannot send credentials.
        if self.command in ("GET", "HEAD") and self.path.split("?", 1)[0] in PROBE_PATHS:
            return True
        if auth.check(self.headers.get("Authorization")):
            return True
        self._send(
            401,
            b"Unauthorized\n",
            headers={"WWW-Authenticate": 'Basic realm="healthimaging-exporter"'},
        )
        return False

    def do_GET(self) -> None:
        if not self._authorized():
            return
        path = self.path.split("?", 1)[0]
        app = self.server.app
        if path == "/metrics":
            self._serve_metrics()
        elif path == "/-/healthy":
            problem = app.health()
            self._send(200, f"Healthy{', but ' + problem if problem else ''}\n".encode())
        elif path == "/-/ready":
            if app.is_ready():
                self._send(200, b"Ready\n")
            else:
                self._send(503, b"Not ready: the first poll has not finished\n")
        elif path == "/":
            body = LANDING.format(version=html.escape(__version__)).encode()
            self._send(200, body, "text/html; charset=utf-8")
        elif path == "/-/reload":
            self._send(405, b"Method Not Allowed: use POST\n", headers={"Allow": "POST"})
        else:
            self._send(404, b"Not Found\n")

    do_HEAD = do_GET

    def do_POST(self) -> None:
        if not self._authorized():
            return
        # Drain any body so the connection stays usable.
        length = self.headers.get("Content-Length", "0")
        if length.isdigit() and 0 < int(length) <= 1 << 16:
            self.rfile.read(int(length))
        path = self.path.split("?", 1)[0]
        reload = self.server.app.reload
        if path != "/-/reload":
            self._send(405 if path in ("/metrics", "/", "/-/healthy", "/-/ready") else 404, b"")
        elif reload is None:
            self._send(403, b"Lifecycle API is not enabled (--web.enable-lifecycle)\n")
        else:
            error = reload()
            if error is None:
                self._send(200, b"Reloaded\n")
            else:
                self._send(500, f"Reload failed: {error}\n".encode())

    def _serve_metrics(self) -> None:
        exposition = self.server.app.exposition.current()
        if exposition is None:
            self._send(503, b"No metrics yet: the first poll has not finished\n")
            return
        openmetrics = wants_openmetrics(self.headers.get("Accept"))
        content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
        headers = {"Vary": "Accept, Accept-Encoding"}
        if accepts_gzip(self.headers.get("Accept-Encoding")):
            headers["Content-Encoding"] = "gzip"
            self._send(200, exposition.gzipped(openmetrics), content_type, headers)
            return
        # Plain: the kept gzip, decompressed as it goes out, never whole in memory.
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        for name, value in {**self.server.app.headers, **headers}.items():
            self.send_header(name, value)
        if self.request_version == "HTTP/1.0":
            self.close_connection = True  # the end of the body is the end of the connection
            self.end_headers()
            if self.command != "HEAD":
                for piece in exposition.stream(openmetrics):
                    self.wfile.write(piece)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command == "HEAD":
            return
        for piece in exposition.stream(openmetrics):
            if piece:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Bad request lines, oversized headers, unsupported methods: plain text, one line.
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # an unparsable request line: answer in 1.0
            self.request_version = "HTTP/1.0"
        self._send(code, f"{message or 'Bad Request'}\n".encode())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], app: WebApp, ssl_context: ssl.SSLContext | None
    ) -> None:
        self.app = app
        self.ssl_context = ssl_context
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        # Headers and body go out in separate writes; without this, Nagle's algorithm and the
        # client's delayed ACK can hold a small body back for 40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is not None:
            # The handshake happens in the handler thread, so a slow client blocks no one.
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, address

    def finish_request(self, request: object, client_address: object) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.settimeout(10)
                request.do_handshake()
            except (OSError, ssl.SSLError):
                return  # a plain-HTTP client or a bad certificate: nothing to answer
        super().finish_request(request, client_address)  # type: ignore[arg-type]

    def handle_error(self, request: object, client_address: object) -> None:
        log.debug("connection from %s ended with an error", client_address)


class WebServer:
    """Serves a WebApp on a thread; port 0 picks a free port."""

    def __init__(
        self, host: str, port: int, app: WebApp, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._server = _Server((host, port), app, ssl_context)
        self._thread: threading.Thread | None = None
        self._tls = ssl_context is not None

    @property
    def port(self) -> int:
        """Return the bound port."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Return the base URL, with the bound port."""
        host = str(self._server.server_address[0])
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"{'https' if self._tls else 'http'}://{host}:{self.port}"

    def start(self) -> WebServer:
        """Start serving in a background thread; the socket is already listening."""
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            name="web",
            kwargs={"poll_interval": 0.2},
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
