"""The HTTP/1.1 keep-alive server and EmulatorServer, its start/stop wrapper for threads."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

from . import admin, routes
from .backend import Backend
from .dataset import demo_path
from .events import EventSettings
from .messages import Request, Response

log = logging.getLogger("exporter.emulator")
# Idle keep-alive connections are closed after this long so threads do not pile up.
_IDLE_TIMEOUT = 60.0


class _Server(ThreadingHTTPServer):
    """Tracks open connections so stop() can close idle keep-alive sockets and join threads."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], backend: Backend, verbose: bool) -> None:
        self.backend = backend
        self.verbose = verbose
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One log line instead of a traceback on stderr (e.g. a client hung up mid-answer)."""
        exc = sys.exc_info()[1]
        log.warning("connection from %s failed: %s: %s", client_address, type(exc).__name__, exc)

    def close_connections(self) -> None:
        """Wake every handler blocked on a keep-alive read so it can finish."""
        with self._open_lock:
            for sock in list(self._open):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """Reads a request, hands it to the admin or data-plane routes, writes the answer."""

    protocol_version = "HTTP/1.1"
    server_version = "healthimaging-emulator"
    sys_version = ""
    timeout = _IDLE_TIMEOUT
    # Buffer the answer so status, headers and body leave in one write; with TCP_NODELAY this
    # avoids the 40 ms Nagle/delayed-ACK stall that small split writes cause on keep-alive.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    def _serve(self) -> None:
        server = cast(_Server, self.server)
        body = self._read_body()
        if body is None:
            self._send(Response(400, b'{"message":"Bad Content-Length or chunked body"}'))
            self.close_connection = True
            return
        # Absolute-form targets (proxy requests, RFC 9112 3.2.2) carry scheme and host.
        target = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=target.path or "/",
            query=dict(parse_qsl(target.query, keep_blank_values=True)),
            headers=dict(self.headers.items()),
            body=body,
        )
        if request.path.startswith(admin.PREFIX):
            response = admin.dispatch(server.backend, request)
        else:
            response = routes.dispatch(server.backend, request)
        self._send(response)

    def _read_body(self) -> bytes | None:
        """The request body by Content-Length or chunked encoding; None if it is malformed."""
        try:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                # Trailer section: header lines up to the blank line that ends the message.
                while self.rfile.readline().strip():
                    pass
                return b"".join(chunks)
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        if length < 0:
            return None
        return self.rfile.read(length) if length else b""

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """JSON instead of the stock HTML error page (bad request line, unknown method...)."""
        body = json.dumps({"message": message or self.responses.get(code, ("Error",))[0]})
        self.close_connection = True
        self.send_response(code, message)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-amzn-ErrorType", "BadRequestException")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if getattr(self, "command", "") != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body.encode())

    def log_message(self, format: str, *args: Any) -> None:
        """Access log only when verbose: quiet by default."""
        if cast(_Server, self.server).verbose:
            log.info("%s %s", self.address_string(), format % args)


class EmulatorServer:
    """The emulator in a background thread: port 0 picks a free port; start/stop or `with`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        dataset: str | os.PathLike[str] | Mapping[str, Any] | None = "demo",
        *,
        backend: Backend | None = None,
        verbose: bool = False,
        events: EventSettings | None = None,
        s3_endpoint_url: str | None = None,
        tick_seconds: float = 0.1,
    ) -> None:
        """Load `dataset` ("demo", None for empty, a file path or dict) into the backend.

        `events` publishes HealthImaging events (to SQS if it names a queue);
        `s3_endpoint_url` makes ended import jobs write their output to that S3;
        every `tick_seconds` the server applies the changes due on the emulator's clock.
        """
        self.host = host
        self._requested_port = port
        self.backend = backend if backend is not None else Backend()
        if dataset is not None:
            self.backend.load_dataset(demo_path() if dataset == "demo" else dataset)
        if events is not None:
            self.backend.configure_events(events)
        if s3_endpoint_url is not None:
            self.backend.configure_s3_output(s3_endpoint_url)
        self._verbose = verbose
        self._tick_seconds = tick_seconds
        self._ticking = threading.Event()
        self._ticker: threading.Thread | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()
        self._stop_lock = threading.Lock()

    @property
    def port(self) -> int:
        """The bound port (after start)."""
        if self._server is None:
            raise RuntimeError("EmulatorServer is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL clients use as endpoint_url."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> EmulatorServer:
        """Bind, serve in a daemon thread and return once listening."""
        if self._thread is not None:
            return self
        self._server = _Server((self.host, self._requested_port), self.backend, self._verbose)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"healthimaging-emulator:{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._ticking.clear()
        self._ticker = threading.Thread(
            target=self._tick, name=f"healthimaging-emulator-clock:{self.port}", daemon=True
        )
        self._ticker.start()
        self.ready.set()
        return self

    def _tick(self) -> None:
        # Jobs and datastores change on the clock even when nobody asks: events and S3 output
        # must appear on time for a consumer that only listens.
        while not self._ticking.wait(self._tick_seconds):
            try:
                self.backend.advance()
            except Exception as exc:  # the clock must keep ticking whatever one change does
                log.warning("emulator clock tick failed: %s: %s", type(exc).__name__, exc)

    def stop(self) -> None:
        """Stop serving, close open connections and join all threads; safe to call twice."""
        with self._stop_lock:
            server, thread = self._server, self._thread
            if server is None or thread is None:
                return
            self._ticking.set()
            if self._ticker is not None:
                self._ticker.join()
                self._ticker = None
            server.shutdown()
            server.close_connections()
            # server_close joins the handler threads (ThreadingMixIn.block_on_close).
            server.server_close()
            thread.join()
            self._thread = None
            # The background sender belongs to the running emulator; messages not yet sent
            # are dropped, as a process that exits drops them.
            self.backend.close()
            self.ready.clear()

    def __enter__(self) -> EmulatorServer:
        """Start on entering the block."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop on leaving the block."""
        self.stop()
