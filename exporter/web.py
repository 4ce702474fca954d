"""The HTTP server: /metrics from the last rendering, health, readiness, reload, a landing page."""

from __future__ import annotations

import contextlib
import errno
import functools
import html
import io
import logging
import math
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Protocol

from exporter import __version__
from exporter.metrics.exposition import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    ExpositionCache,
    coalesce,
)
from exporter.webconfig import WWW_AUTHENTICATE, RateLimit

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

log = logging.getLogger(__name__)

DOCS_URL = "https://github.com/healthimaging-exporter/healthimaging-exporter/tree/main/docs"


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """How long and for how many clients the server waits (Go's http.Server timeouts, a cap)."""

    header_timeout: float = 10.0  # a whole request line and headers, however slowly they drip
    idle_timeout: float = 120.0  # between keep-alive requests; above any usual scrape interval
    write_timeout: float = 60.0  # each send to a client that stops reading
    max_connections: int = 256  # open at once (a thread each); more are turned away with a 503
    backlog: int = socket.SOMAXCONN  # the kernel caps it at net.core.somaxconn
    max_body: int = 1 << 16  # a larger request body is refused (no endpoint reads one)


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
    rate_limit: RateLimit | None = None  # from the web config; probes are not limited
    telemetry_path: str = "/metrics"  # --web.telemetry-path; the landing page links to it
    crashed: Callable[[str], None] | None = None  # counts a request ended by a bug ("http")


def wants_openmetrics(accept: str | None) -> bool:
    """Tell whether an Accept header prefers OpenMetrics, as Prometheus's scrapes do."""
    if not accept:
        return False
    return any(
        part.split(";")[0].strip() == "application/openmetrics-text" for part in accept.split(",")
    )


GATHER = 512  # buffers per sendmsg: well under IOV_MAX (1024 on Linux)


def send_gathered(sock: socket.socket, parts: Iterable[bytes]) -> None:
    """Send every part, in order, a batch of buffers per system call; raise OSError on failure.

    Written here because socket.sendall takes one buffer: the body is tens of thousands of
    kept segments, and joining them would copy the body for every scrape.
    """
    if isinstance(sock, ssl.SSLSocket):  # TLS records are written one buffer at a time
        for block in coalesce(parts):
            sock.sendall(block)
        return
    batch: list[bytes | memoryview] = []
    for part in parts:
        batch.append(part)
        if len(batch) >= GATHER:
            _send_batch(sock, batch)
            batch = []
    _send_batch(sock, batch)


class BodyLengthError(RuntimeError):
    """A body came to another length than the one its headers declared (a bug, not a client)."""


def send_exactly(sock: socket.socket, pieces: Iterable[bytes], length: int) -> None:
    """Send a body whose headers declared `length` bytes; never more, and say if it was less.

    A longer body would be read by the client as the start of the next response.
    """
    left = length
    for piece in pieces:
        if len(piece) > left:
            raise BodyLengthError(f"the body runs past its declared {length} bytes")
        sock.sendall(piece)
        left -= len(piece)
    if left:
        raise BodyLengthError(f"the body ended {left} bytes short of its declared {length}")


def _send_batch(sock: socket.socket, batch: list[bytes | memoryview]) -> None:
    start = 0
    while start < len(batch):
        sent = sock.sendmsg(batch[start:])
        while start < len(batch) and sent >= len(batch[start]):
            sent -= len(batch[start])
            start += 1
        if sent:  # a buffer sent in part: the rest of it goes first in the next call
            batch[start] = memoryview(batch[start])[sent:]


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


def landing_page(telemetry_path: str) -> bytes:
    """Return the landing page, in the exporter-toolkit's shape: name, description, version, links.

    Links are relative, as the toolkit's are, so the page works behind a path-prefixing proxy.
    """
    metrics_link = html.escape(telemetry_path.removeprefix("/") or ".", quote=True)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<title>healthimaging-exporter</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
  margin: 0; }}
header {{ background-color: #e6522c; color: #fff; font-size: 1rem; padding: 1rem; }}
main {{ padding: 1rem; }}
</style>
</head>
<body>
<header><h1>healthimaging-exporter</h1></header>
<main>
<h2>Prometheus exporter for AWS HealthImaging: image set copy, import and update failures</h2>
<div>Version: {html.escape(__version__)}</div>
<div>
<ul>
<li><a href="{metrics_link}">Metrics</a></li>
<li><a href="-/healthy">Health</a></li>
<li><a href="-/ready">Readiness</a></li>
<li><a href="{DOCS_URL}">Documentation</a></li>
</ul>
</div>
</main>
</body>
</html>
""".encode()


# RFC 9110 Content-Length: digits only (str.isdigit() would also take "²" and other digits).
_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")

# accept() errors that say the process or system is out of descriptors or buffers: retrying at
# once fails again, so the accept loop backs off instead of spinning.
_ACCEPT_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class _TokenBucket:
    """golang.org/x/time/rate's Allow(): a token every interval, at most burst saved up."""

    def __init__(self, limit: RateLimit) -> None:
        self._interval = limit.interval_seconds
        self._burst = float(limit.burst)
        self._tokens = float(limit.burst)
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Take a token: 0 when one was there, else the seconds until one will be."""
        with self._lock:
            now = time.monotonic()
            elapsed = now - self._last
            self._last = now
            self._tokens = min(self._burst, self._tokens + elapsed / self._interval)
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) * self._interval


class _DeadlineReader(io.RawIOBase):
    """Socket reads bound by one deadline per phase (headers, idle wait).

    A socket timeout alone is reset by every byte a slow client drips; a deadline is not.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._deadline = math.inf

    def arm(self, seconds: float) -> None:
        """Give the reads from now on this many seconds in all."""
        self._deadline = time.monotonic() + seconds

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("read deadline passed")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


class _SocketWriter(io.BufferedIOBase):
    """Unbuffered writes straight to the socket (socketserver's own writer is private)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        self._sock.sendall(data)
        with memoryview(data) as view:
            return view.nbytes


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = f"healthimaging-exporter/{__version__}"
    sys_version = ""

    def version_string(self) -> str:
        # The default appends "Python/3.x": no need to tell the world the runtime's version.
        return self.server_version

    def log_message(self, format: str, *args: object) -> None:
        # Request lines can carry tokens in query strings; only errors are logged, by us.
        pass

    def setup(self) -> None:
        # StreamRequestHandler.setup, with reads bound by deadlines (see _DeadlineReader).
        self.connection = self.request
        self._reader = _DeadlineReader(self.connection)
        self._buffered = io.BufferedReader(self._reader)
        self.rfile = self._buffered
        self.wfile = _SocketWriter(self.connection)
        self._served = 0

    def handle_one_request(self) -> None:
        # BaseHTTPRequestHandler's, plus Go net/http's timeouts and body framing.
        limits = self.server.limits
        try:
            # The first request has header_timeout from accept; later ones may idle first.
            self._reader.arm(limits.idle_timeout if self._served else limits.header_timeout)
            if not self._buffered.peek(1):
                self.close_connection = True
                return
            self._reader.arm(limits.header_timeout)
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.requestline = self.request_version = self.command = ""
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                return
            if not self.parse_request():
                return
            self._served += 1
            if not self._read_body():
                return
            self.connection.settimeout(limits.write_timeout)
            method = getattr(self, f"do_{self.command}", None)
            if method is None:
                self.send_error(HTTPStatus.NOT_IMPLEMENTED, "Not Implemented")
                return
            method()
            self.wfile.flush()
        except TimeoutError:
            self.close_connection = True  # as Go does: no answer to a client that is too slow

    def _read_body(self) -> bool:
        """Read and drop the request body; refuse and close when its end is ambiguous."""
        lengths = self.headers.get_all("Content-Length") or []
        encodings = self.headers.get_all("Transfer-Encoding") or []
        if encodings and lengths:
            self.send_error(HTTPStatus.BAD_REQUEST, "Both Transfer-Encoding and Content-Length")
            return False
        if len(lengths) > 1:
            self.send_error(HTTPStatus.BAD_REQUEST, "More than one Content-Length")
            return False
        if encodings:
            # No endpoint needs a body: answer, then close, so the body is never read as the
            # next request (cheaper than decoding chunks only to throw them away).
            self.close_connection = True
            return True
        if not lengths:
            return True
        value = lengths[0].strip(" \t")
        if not _CONTENT_LENGTH.fullmatch(value):
            self.send_error(HTTPStatus.BAD_REQUEST, "Invalid Content-Length")
            return False
        length = int(value)
        if length > self.server.limits.max_body:
            self.send_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request body too large")
            return False
        if len(self.rfile.read(length)) < length:
            self.close_connection = True  # the client went away mid-body
            return False
        return True

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
        # Liveness and readiness reveal nothing, and kubelet probes cannot send credentials;
        # nor are they rate-limited: a flood of scrapes must not get the exporter restarted.
        if self.command in ("GET", "HEAD") and self.path.split("?", 1)[0] in PROBE_PATHS:
            return True
        bucket = self.server.bucket
        if bucket is not None:
            wait = bucket.take()
            if wait > 0:
                retry = str(max(1, math.ceil(wait)))
                self._send(429, b"Too Many Requests\n", headers={"Retry-After": retry})
                return False
        auth = self.server.app.authenticator
        if auth is None or not auth.enabled():
            return True
        if auth.check(self.headers.get("Authorization")):
            return True
        self._send(401, b"Unauthorized\n", headers={"WWW-Authenticate": WWW_AUTHENTICATE})
        return False

    def do_GET(self) -> None:
        if not self._authorized():
            return
        path = self.path.split("?", 1)[0]
        app = self.server.app
        if path == app.telemetry_path:
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
            self._send(200, self.server.landing, "text/html; charset=utf-8")
        elif path == "/-/reload":
            self._send(405, b"Method Not Allowed: use POST\n", headers={"Allow": "POST"})
        else:
            self._send(404, b"Not Found\n")

    do_HEAD = do_GET

    def do_POST(self) -> None:
        if not self._authorized():
            return
        path = self.path.split("?", 1)[0]
        app = self.server.app
        reload = app.reload
        if path != "/-/reload":
            known = path in (app.telemetry_path, "/", "/-/healthy", "/-/ready")
            self._send(405 if known else 404, b"")
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
        parts: Iterable[bytes]
        if accepts_gzip(self.headers.get("Accept-Encoding")):
            headers["Content-Encoding"] = "gzip"
            # The kept segments, a few kilobytes each, handed to the kernel a batch at a time
            # (sendmsg gathers them): no copy of the body, and a call per batch, not per segment.
            length, parts = exposition.gzipped_parts(openmetrics)
            send = send_gathered
        else:
            # Plain: the kept gzip, decompressed as it goes out, never whole in memory.
            length, parts = exposition.plain_parts(openmetrics)
            send = functools.partial(send_exactly, length=length)
        headers["Content-Length"] = str(length)
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        for name, value in {**self.server.app.headers, **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            send(self.connection, parts)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Bad request lines, oversized headers, unsupported methods: plain text, one line.
        self.close_connection = True
        self.connection.settimeout(self.server.limits.write_timeout)  # not the read deadline's
        if self.request_version == "HTTP/0.9":  # an unparsable request line: answer in 1.0
            self.request_version = "HTTP/1.0"
        self._send(code, f"{message or 'Bad Request'}\n".encode())


@dataclass(frozen=True, slots=True)
class BindTarget:
    """How to bind one listen address: the socket family, host, and whether dual-stack."""

    family: socket.AddressFamily
    host: str
    dual_stack: bool  # an IPv6 socket that takes IPv4 connections too


def bind_target(host: str) -> BindTarget:
    """Resolve a listen host; "" (`:9890`) is every interface, IPv6 and IPv4 alike, as in Go.

    Where the kernel has no IPv6, every IPv4 interface.
    """
    if not host:
        if socket.has_dualstack_ipv6():
            return BindTarget(socket.AF_INET6, "::", True)
        return BindTarget(socket.AF_INET, "0.0.0.0", False)
    return BindTarget(socket.AF_INET6 if ":" in host else socket.AF_INET, host, False)


def bind_socket(sock: socket.socket, target: BindTarget, port: int) -> None:
    """Bind a socket of the target's family as the web server does (address reuse, stacks)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if target.dual_stack:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((target.host, port))


class _Shared:
    """What every listener of one WebServer shares: the app, limits, rate and connection caps.

    One bucket and one connection count for all listeners, as exporter-toolkit's one
    http.Server does for all its addresses: a second address is no way round the limits.
    """

    def __init__(self, app: WebApp, limits: ServerLimits) -> None:
        self.app = app
        self.limits = limits
        self.landing = landing_page(app.telemetry_path)
        limit = app.rate_limit
        self.bucket = _TokenBucket(limit) if limit is not None and limit.enabled else None
        self.connections = 0
        self.lock = threading.Lock()
        self.turning_away = False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        shared: _Shared,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.shared = shared
        self.app = shared.app
        self.landing = shared.landing
        self.ssl_context = ssl_context
        self.limits = shared.limits
        self.bucket = shared.bucket
        self.request_queue_size = shared.limits.backlog  # socketserver's default is 5
        self._accept_backoff = 0.0
        self.target = bind_target(address[0])
        self.address_family = self.target.family
        super().__init__((self.target.host, address[1]), _Handler)

    def server_bind(self) -> None:
        # TCPServer.server_bind, plus the dual-stack option (HTTPServer's part sets names).
        bind_socket(self.socket, self.target, self.server_address[1])
        host, port = self.socket.getsockname()[:2]
        self.server_address = (host, port)
        self.server_name = socket.getfqdn(host)
        self.server_port = port

    def get_request(self) -> tuple[socket.socket, Any]:
        try:
            sock, address = super().get_request()
        except OSError as exc:
            if exc.errno in _ACCEPT_EXHAUSTED:
                self._back_off(exc)
            raise
        if self._accept_backoff:
            self._accept_backoff = 0.0
            log.info("accepting connections again")
        # Headers and body go out in separate writes; without this, Nagle's algorithm and the
        # client's delayed ACK can hold a small body back for 40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is not None:
            # The handshake happens in the handler thread, so a slow client blocks no one.
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, address

    def _back_off(self, exc: OSError) -> None:
        """Wait before the next accept(), as Go's http.Server does: 5 ms, doubling up to 1 s."""
        if not self._accept_backoff:
            log.warning(
                "cannot accept connections: %s (out of file descriptors or memory);"
                " retrying with back-off",
                exc.strerror,
            )
        self._accept_backoff = min(1.0, max(0.005, self._accept_backoff * 2))
        time.sleep(self._accept_backoff)

    def process_request(self, request: Any, client_address: Any) -> None:
        shared = self.shared
        with shared.lock:
            full = shared.connections >= self.limits.max_connections
            first_turned_away = full and not shared.turning_away
            shared.turning_away = full
            if not full:
                shared.connections += 1
        if full:
            if first_turned_away:  # once per episode, not once per connection
                log.warning(
                    "%d connections open, the most allowed; turning new ones away",
                    self.limits.max_connections,
                )
            self._turn_away(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._release()  # no thread was started, so none will release the slot
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self.shared.lock:
            self.shared.connections -= 1

    def _turn_away(self, request: socket.socket) -> None:
        """Answer 503 from the accept thread without blocking it, then close."""
        if not isinstance(request, ssl.SSLSocket):  # a TLS client could not read a plain 503
            body = b"Service Unavailable: too many connections\n"
            answer = (
                b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
                b"Content-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            request.setblocking(False)
            with contextlib.suppress(OSError):
                request.recv(65536)  # what already arrived, so that closing sends no reset
            with contextlib.suppress(OSError):
                request.send(answer)
        self.shutdown_request(request)

    def finish_request(self, request: object, client_address: object) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.settimeout(self.limits.header_timeout)
                request.do_handshake()
            except (OSError, ssl.SSLError):
                return  # a plain-HTTP client or a bad certificate: nothing to answer
        super().finish_request(request, client_address)  # type: ignore[arg-type]

    def handle_error(self, request: object, client_address: object) -> None:
        error = sys.exc_info()[1]
        if error is None or isinstance(error, OSError):  # the client went away, or too slow
            log.debug("connection from %s ended with an error", client_address)
            return
        # Anything else is a bug on our side (a scrape's body could not be built, say): one
        # line and a count, as a crashed job gets; the server goes on serving.
        log.error(
            "request from %s failed: internal error: %s: %s",
            client_address,
            type(error).__name__,
            error,
        )
        log.debug("request failed", exc_info=error)
        if self.app.crashed is not None:
            self.app.crashed("http")


class ListenError(OSError):
    """One of the addresses could not be bound; `index` says which (the others are closed)."""

    def __init__(self, index: int, error: OSError) -> None:
        super().__init__(error.errno, error.strerror)
        self.index = index


class WebServer:
    """Serves a WebApp on one or more addresses, a thread each; port 0 picks a free port.

    A host of "" is every interface (see bind_target).

    Every listener gets the same handler, TLS context and limits (exporter-toolkit's
    `web.ListenAndServe` with several `--web.listen-address`).
    """

    def __init__(
        self,
        addresses: Sequence[tuple[str, int]],
        app: WebApp,
        ssl_context: ssl.SSLContext | None = None,
        limits: ServerLimits | None = None,
    ) -> None:
        if not addresses:
            raise ValueError("a web server needs at least one address")
        self._shared = _Shared(app, limits or ServerLimits())
        self._servers: list[_Server] = []
        for index, address in enumerate(addresses):
            try:
                self._servers.append(_Server(address, self._shared, ssl_context))
            except OSError as exc:
                for server in self._servers:
                    server.server_close()
                raise ListenError(index, exc) from None
        self._threads: list[threading.Thread] = []
        self._tls = ssl_context is not None

    @property
    def port(self) -> int:
        """Return the first listener's bound port."""
        return self.ports[0]

    @property
    def ports(self) -> tuple[int, ...]:
        """Return every listener's bound port, in the order given."""
        return tuple(int(server.server_address[1]) for server in self._servers)

    @property
    def connections(self) -> int:
        """Return how many client connections are open, on all listeners."""
        return self._shared.connections

    @property
    def url(self) -> str:
        """Return the first listener's base URL, with the bound port."""
        return self.urls[0]

    @property
    def urls(self) -> tuple[str, ...]:
        """Return every listener's base URL (a wildcard address as loopback)."""
        urls: list[str] = []
        for server in self._servers:
            host, port = str(server.server_address[0]), int(server.server_address[1])
            if host == "0.0.0.0" or server.target.dual_stack:
                host = "127.0.0.1"
            elif host == "::":
                host = "[::1]"
            elif ":" in host:
                host = f"[{host}]"
            urls.append(f"{'https' if self._tls else 'http'}://{host}:{port}")
        return tuple(urls)

    def start(self) -> WebServer:
        """Start serving, a thread per listener (`web_0`, `web_1`, ...); sockets listen already."""
        for index, server in enumerate(self._servers):
            thread = threading.Thread(
                target=server.serve_forever,
                name=f"web_{index}",
                kwargs={"poll_interval": 0.2},
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop serving and close the sockets; each accept thread is joined."""
        if self._threads:
            for server in self._servers:
                server.shutdown()
            for thread in self._threads:
                thread.join(timeout=5)
            self._threads = []
        for server in self._servers:
            server.server_close()
