"""The HTTP server under hostile clients: backlog, timeouts, connection cap, EMFILE, framing."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from exporter import __version__
from exporter.metrics.exposition import ExpositionCache
from exporter.web import BindTarget, ServerLimits, WebApp, WebServer, bind_target
from exporter.webconfig import RateLimit

ROOT = Path(__file__).resolve().parents[2]
ServerFactory = Callable[..., WebServer]


def _app(**overrides: object) -> WebApp:
    fields: dict[str, object] = {
        "exposition": ExpositionCache(),
        "is_ready": lambda: True,
        "health": lambda: None,
    }
    fields.update(overrides)
    return WebApp(**fields)  # type: ignore[arg-type]


@pytest.fixture
def serve() -> Iterator[ServerFactory]:
    """Start WebServers on free loopback ports; stopped after the test."""
    servers: list[WebServer] = []

    def start(limits: ServerLimits | None = None, run: bool = True, **app: object) -> WebServer:
        server = WebServer([("127.0.0.1", 0)], _app(**app), limits=limits)
        servers.append(server)
        return server.start() if run else server

    yield start
    for server in servers:
        server.stop()


def _connect(server: WebServer, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)


def _read_until_closed(sock: socket.socket, within: float = 15) -> bytes | None:
    """Everything the server sends until it closes; None when it still has not after `within`."""
    sock.settimeout(within)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return data


def _read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length, read from a kept-alive connection."""
    sock.settimeout(15)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096) or b"\r\n\r\n"
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"\r\nContent-Length: (\d+)", head)
    while length is not None and len(body) < int(length.group(1)):
        body += sock.recv(4096)
    return head + b"\r\n\r\n" + body


def _responses(data: bytes) -> list[bytes]:
    """The status lines of the responses in a byte stream."""
    return re.findall(rb"HTTP/1\.[01] \d\d\d[^\r\n]*", data)


def _wait_for(predicate: Callable[[], bool], timeout: float = 15) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


# --- listen backlog -------------------------------------------------------------------------------


def test_listen_backlog_holds_a_burst_of_connections(serve: ServerFactory) -> None:
    # Not started: nothing accepts, so every connection waits in the kernel's accept queue.
    server = serve(run=False)
    opened: list[socket.socket] = []
    try:
        for _ in range(100):
            opened.append(_connect(server, timeout=3))
    except TimeoutError:
        pass
    finally:
        for sock in opened:
            sock.close()
    assert len(opened) == 100


# --- timeouts -------------------------------------------------------------------------------------


def test_a_slow_client_cannot_hold_a_connection_by_dripping_headers(serve: ServerFactory) -> None:
    server = serve(ServerLimits(header_timeout=1, idle_timeout=60))
    with _connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        sock.settimeout(0.3)
        end = time.monotonic() + 20
        closed = False
        while time.monotonic() < end and not closed:
            try:
                sock.sendall(b"X-Drip: 1\r\n")  # a header line every 0.3 s, never the blank line
                closed = sock.recv(4096) == b""
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
    assert closed


def test_a_connection_that_sends_nothing_is_closed(serve: ServerFactory) -> None:
    server = serve(ServerLimits(header_timeout=1, idle_timeout=60))
    with _connect(server) as sock:
        assert _read_until_closed(sock) == b""


def test_idle_keep_alive_connections_are_closed_and_free_their_threads(
    serve: ServerFactory,
) -> None:
    server = serve(ServerLimits(header_timeout=30, idle_timeout=1))
    baseline = threading.active_count()
    clients = [_connect(server) for _ in range(20)]
    try:
        for sock in clients:
            sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        for sock in clients:
            assert _read_response(sock).startswith(b"HTTP/1.1 200")
        for sock in clients:
            assert _read_until_closed(sock) == b""  # closed by the server, after the response
        _wait_for(lambda: threading.active_count() <= baseline)
    finally:
        for sock in clients:
            sock.close()


# --- connection cap -------------------------------------------------------------------------------


def test_connections_over_the_cap_are_turned_away_without_a_thread(serve: ServerFactory) -> None:
    server = serve(ServerLimits(header_timeout=60, idle_timeout=60, max_connections=4))
    baseline = threading.active_count()
    held = [_connect(server) for _ in range(4)]
    extra: list[socket.socket] = []
    try:
        for sock in held:  # each answered, so each is in a handler thread now
            sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_response(sock).startswith(b"HTTP/1.1 200")
        extra = [_connect(server) for _ in range(10)]
        for sock in extra:
            answer = _read_until_closed(sock)
            assert answer is not None, "an excess connection was kept open"
            assert answer == b"" or answer.startswith(b"HTTP/1.1 503"), answer
        assert threading.active_count() <= baseline + 4
    finally:
        for sock in held + extra:
            sock.close()
    # Slots free up when clients leave.
    _wait_for(lambda: server.connections == 0)
    with _connect(server) as sock:
        sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (_read_until_closed(sock) or b"").startswith(b"HTTP/1.1 200")


# --- file descriptors run out -----------------------------------------------------------------

_EMFILE_CHILD = """
import logging, os, resource, sys, time
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
from exporter.metrics.exposition import ExpositionCache
from exporter.web import WebApp, WebServer
app = WebApp(exposition=ExpositionCache(), is_ready=lambda: True, health=lambda: None)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
server = WebServer([("127.0.0.1", 0)], app).start()
fillers = []
try:
    while True:
        fillers.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
print(server.port, flush=True)
sys.stdin.readline()  # the parent has connected: accept() now fails with EMFILE
time.sleep(0.5)
before = resource.getrusage(resource.RUSAGE_SELF)
time.sleep(2)
after = resource.getrusage(resource.RUSAGE_SELF)
cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
print(f"{cpu:.3f}", flush=True)
for fd in fillers:
    os.close(fd)
sys.stdin.readline()  # the parent has been served
server.stop()
"""


def test_running_out_of_file_descriptors_does_not_spin(serve: ServerFactory) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_EMFILE_CHILD)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    clients: list[socket.socket] = []
    try:
        port = int(child.stdout.readline())
        clients = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(3)]
        child.stdin.write("go\n")
        child.stdin.flush()
        cpu = float(child.stdout.readline())
        # A busy accept loop burns a whole core (about 2 s of CPU in 2 s).
        assert cpu < 0.5, f"{cpu:.2f} s of CPU in 2 s while accept() failed"
        # Once descriptors are free again, the waiting connections are served.
        clients[0].sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (_read_until_closed(clients[0], within=20) or b"").startswith(b"HTTP/1.1 200")
        child.stdin.write("done\n")
        child.stdin.flush()
        _, stderr = child.communicate(timeout=30)
    finally:
        for sock in clients:
            sock.close()
        if child.poll() is None:
            child.kill()
            child.wait()
    warnings = [line for line in stderr.splitlines() if "file descriptors" in line]
    assert len(warnings) == 1, stderr  # said once, not once per failed accept
    assert "Traceback" not in stderr


# --- request framing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        b"Content-Length: 5\r\nContent-Length: 5\r\n",
        b"Content-Length: 5\r\nContent-Length: 6\r\n",
        b"Content-Length: abc\r\n",
        b"Content-Length: +5\r\n",
        b"Content-Length: -1\r\n",
        b"Content-Length: 5 5\r\n",
        b"Content-Length: \xb2\r\n",  # a superscript two: str.isdigit() says yes
        b"Content-Length: \r\n",
    ],
)
@pytest.mark.parametrize("method", [b"GET", b"POST", b"HEAD"])
def test_ambiguous_framing_is_refused_and_the_connection_closed(
    serve: ServerFactory, method: bytes, headers: bytes
) -> None:
    server = serve()
    with _connect(server) as sock:
        # What follows the headers would run as a second request if the server guessed wrong.
        sock.sendall(method + b" /-/healthy HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        sock.sendall(b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = _read_until_closed(sock)
    assert answer is not None, "the connection was kept open"
    assert _responses(answer) == [b"HTTP/1.1 400 Bad Request"], answer


@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_a_body_on_get_is_not_run_as_a_second_request(serve: ServerFactory, method: bytes) -> None:
    server = serve()
    body = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    with _connect(server) as sock:
        sock.sendall(
            method
            + b" /-/healthy HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
            + b"GET /-/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        answer = _read_until_closed(sock)
    assert answer is not None
    # The declared body is read and dropped; the next real request is served.
    assert _responses(answer) == [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK"], answer
    assert answer.count(b"Ready\n") == 1


def test_a_large_declared_body_is_refused(serve: ServerFactory) -> None:
    server = serve()
    with _connect(server) as sock:
        sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n")
        answer = _read_until_closed(sock)
    assert answer is not None
    assert [r[:12] for r in _responses(answer)] == [b"HTTP/1.1 413"], answer


def test_a_chunked_body_is_never_parsed_as_a_request(serve: ServerFactory) -> None:
    server = serve()
    body = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    with _connect(server) as sock:
        sock.sendall(
            b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        )
        answer = _read_until_closed(sock)
    assert answer is not None, "the connection was kept open"
    assert _responses(answer) == [b"HTTP/1.1 200 OK"], answer


def test_post_reload_still_drains_its_body(serve: ServerFactory) -> None:
    calls: list[int] = []

    def reload() -> None:
        calls.append(1)

    server = serve(reload=reload)
    with _connect(server) as sock:
        sock.sendall(
            b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        answer = _read_until_closed(sock)
    assert answer is not None
    assert _responses(answer) == [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK"], answer
    assert calls == [1]


# --- landing page and headers ---------------------------------------------------------------------


def test_landing_page_names_the_exporter_and_links_everything(serve: ServerFactory) -> None:
    server = serve()
    with _connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = _read_until_closed(sock) or b""
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
    assert headers[b"Content-Type"] == b"text/html; charset=utf-8"
    assert int(headers[b"Content-Length"]) == len(body)
    assert headers[b"Server"] == f"healthimaging-exporter/{__version__}".encode()
    assert b"Python" not in head
    text = body.decode()
    assert "<h1>healthimaging-exporter</h1>" in text
    assert "AWS HealthImaging" in text  # the one-line description
    assert f"Version: {__version__}" in text
    for href in ("metrics", "-/healthy", "-/ready"):
        assert f'href="{href}"' in text
    assert 'href="https://github.com/healthimaging-exporter/healthimaging-exporter' in text
    with _connect(server) as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = _read_until_closed(sock) or b""
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\n")


def test_error_answers_do_not_name_python(serve: ServerFactory) -> None:
    server = serve()
    with _connect(server) as sock:
        sock.sendall(b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = _read_until_closed(sock) or b""
    assert answer.startswith(b"HTTP/1.1 501")
    assert b"Python" not in answer


# --- rate limit -----------------------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after_and_spares_probes(serve: ServerFactory) -> None:
    server = serve(rate_limit=RateLimit(interval_seconds=3600, burst=2))
    statuses = []
    for _ in range(3):
        with _connect(server) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = _read_until_closed(sock) or b""
        statuses.append(answer[9:12])
        last = answer
    assert statuses == [b"200", b"200", b"429"]
    retry = re.search(rb"\r\nRetry-After: (\d+)\r\n", last)
    assert retry is not None and 0 < int(retry.group(1)) <= 3600
    # Probes are not limited: a flood of scrapes must not make the kubelet restart the exporter.
    with _connect(server) as sock:
        sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (_read_until_closed(sock) or b"").startswith(b"HTTP/1.1 200")


def _status(port: int, path: str = "/") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return (_read_until_closed(sock) or b"")[9:12]


def test_several_listeners_share_one_rate_limit_and_connection_cap() -> None:
    rated = _app(rate_limit=RateLimit(interval_seconds=3600, burst=2))
    capped = ServerLimits(max_connections=1)
    two = [("127.0.0.1", 0), ("127.0.0.1", 0)]
    servers = [WebServer(two, rated).start(), WebServer(two, _app(), limits=capped).start()]
    try:
        first, second = servers[0].ports
        assert first != second and servers[0].urls == tuple(
            f"http://127.0.0.1:{port}" for port in (first, second)
        )
        # One bucket: a second address is no way round the limit.
        assert [_status(first), _status(second), _status(second)] == [b"200", b"200", b"429"]
        # One connection count: a client holding a connection on one fills the other's cap.
        server = servers[1]
        with socket.create_connection(("127.0.0.1", server.ports[0]), timeout=10):
            _wait_for(lambda: server.connections == 1)
            assert _status(server.ports[1], "/-/healthy") == b"503"
        _wait_for(lambda: server.connections == 0)
        assert _status(server.ports[1], "/-/healthy") == b"200"
    finally:
        for server in servers:
            server.stop()
    for server in servers:  # every socket closed
        for port in server.ports:
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_an_empty_host_is_every_interface_of_both_stacks_where_there_are_two() -> None:
    server = WebServer([("", 0)], _app()).start()
    try:
        port = server.port
        assert server.url == f"http://127.0.0.1:{port}"
        hosts = ["127.0.0.1", "127.0.0.2"]  # the second: not what a loopback-only bind answers
        if socket.has_dualstack_ipv6():
            hosts.append("::1")  # as Go's ":port": IPv6 too
        else:
            assert bind_target("") == BindTarget(socket.AF_INET, "0.0.0.0", False)
        for host in hosts:
            with socket.create_connection((host, port), timeout=10) as sock:
                sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert (_read_until_closed(sock) or b"").startswith(b"HTTP/1.1 200"), host
    finally:
        server.stop()


class BrokenExposition:
    """An exposition whose body cannot be built: a bug, not a client going away."""

    def gzipped_parts(self, openmetrics: bool) -> tuple[int, list[bytes]]:
        raise KeyError("a bug while building the body")

    def plain_parts(self, openmetrics: bool) -> tuple[int, Iterator[bytes]]:
        raise KeyError("a bug while building the body")


def test_a_request_a_bug_ends_is_said_in_one_line_counted_and_the_server_goes_on(
    serve: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ExpositionCache()
    cache.publish(BrokenExposition())  # type: ignore[arg-type]
    crashes: list[str] = []
    server = serve(exposition=cache, crashed=crashes.append)
    for encoding in ("gzip", "identity"):
        with _connect(server) as sock:
            sock.sendall(
                f"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: {encoding}\r\n\r\n".encode()
            )
            _read_until_closed(sock)
    assert crashes == ["http", "http"]
    errors = [r for r in caplog.records if "internal error: KeyError" in r.getMessage()]
    assert len(errors) == 2 and all(r.exc_info is None for r in errors)  # no traceback
    with _connect(server) as sock:  # still serving
        sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b" 200 " in _read_response(sock).split(b"\r\n", 1)[0]
