"""HTTPS with a web config: the exporter's web server with its TLS, headers and basic auth."""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from exporter.metrics.exposition import ExpositionCache
from exporter.web import ServerLimits, WebApp, WebServer
from exporter.webconfig import (
    WWW_AUTHENTICATE,
    BasicAuthChecker,
    WebConfig,
    build_ssl_context,
    load_web_config,
)
from tests.pki import issue, make_ca

PASSWORD = "correct horse battery staple"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test CA with server and client certificates, and a rogue CA with its own client."""
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "rogue-ca")
    san = "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"
    issue(d, "ca", "server", "localhost", san)
    issue(d, "ca", "client", "prometheus", "extendedKeyUsage=clientAuth")
    issue(d, "rogue-ca", "rogue-client", "prometheus", "extendedKeyUsage=clientAuth")
    return d


# --- the exporter's web server with a web config ------------------------------------------------


def _serve(config: WebConfig, limits: ServerLimits | None = None) -> Iterator[str]:
    """Run the exporter's web server with the config's TLS, headers and users; yield its URL."""
    app = WebApp(
        exposition=ExpositionCache(),
        is_ready=lambda: True,
        health=lambda: None,
        authenticator=BasicAuthChecker(config.basic_auth_users),
        headers=dict(config.headers),
        rate_limit=config.rate_limit,
    )
    server = WebServer([("127.0.0.1", 0)], app, build_ssl_context(config), limits).start()
    try:
        yield f"https://localhost:{server.port}"
    finally:
        server.stop()


def _web_config(pki: Path, name: str, text: str) -> WebConfig:
    """Write and load a web config next to the certificates."""
    path = pki / name
    path.write_text(text)
    return load_web_config(path)


@pytest.fixture(scope="module")
def auth_url(pki: Path) -> Iterator[str]:
    """An HTTPS server with basic auth and security headers."""
    config = _web_config(
        pki,
        "auth.yml",
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
        "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
        f"basic_auth_users:\n  prometheus: '{HASH}'\n",
    )
    yield from _serve(config)


@pytest.fixture(scope="module")
def mtls_url(pki: Path) -> Iterator[str]:
    """An HTTPS server requiring a client certificate from the test CA."""
    config = _web_config(
        pki,
        "mtls.yml",
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n"
        "  min_version: TLS13\n",
    )
    yield from _serve(config)


# --- a real TLS client -------------------------------------------------------------------------


def _client_context(pki: Path, cert: str | None = None) -> ssl.SSLContext:
    """A verifying client context trusting the test CA, optionally with a client certificate."""
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert is not None:
        context.load_cert_chain(str(pki / f"{cert}.pem"), str(pki / f"{cert}.key"))
    return context


def _get(url: str, context: ssl.SSLContext, auth: tuple[str, str] | None = None) -> tuple[int, Any]:
    """GET a URL; return the status and headers (also for HTTP errors)."""
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            assert response.read()
            return response.status, response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.headers


def test_right_password_gets_200(pki: Path, auth_url: str) -> None:
    status, headers = _get(f"{auth_url}/-/healthy", _client_context(pki), ("prometheus", PASSWORD))
    assert status == 200
    assert headers["X-Content-Type-Options"] == "nosniff"
    again, _ = _get(f"{auth_url}/", _client_context(pki), ("prometheus", PASSWORD))
    assert again == 200


@pytest.mark.parametrize(
    "auth", [None, ("prometheus", "wrong"), ("nobody", PASSWORD), ("prometheus", "")]
)
def test_wrong_or_missing_password_gets_401_with_a_challenge(
    pki: Path, auth_url: str, auth: tuple[str, str] | None
) -> None:
    status, headers = _get(f"{auth_url}/", _client_context(pki), auth)
    assert status == 401
    assert headers["WWW-Authenticate"] == WWW_AUTHENTICATE


def test_plain_http_to_the_tls_port_fails(auth_url: str) -> None:
    port = int(auth_url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        with pytest.raises((http.client.HTTPException, OSError)):
            connection.request("GET", "/metrics")
            response = connection.getresponse()
            pytest.fail(f"plain HTTP got a response: {response.status}")
    finally:
        connection.close()


def test_the_server_certificate_verifies_against_the_ca_only(pki: Path, auth_url: str) -> None:
    untrusting = ssl.create_default_context(cafile=str(pki / "rogue-ca.pem"))
    with pytest.raises(urllib.error.URLError) as caught:
        _get(f"{auth_url}/metrics", untrusting, ("prometheus", PASSWORD))
    assert isinstance(caught.value.reason, ssl.SSLCertVerificationError)


def test_client_certificate_from_the_ca_is_accepted(pki: Path, mtls_url: str) -> None:
    status, _ = _get(f"{mtls_url}/", _client_context(pki, "client"))
    assert status == 200


@pytest.mark.parametrize("cert", [None, "rogue-client"])
def test_client_without_a_valid_certificate_is_refused(
    pki: Path, mtls_url: str, cert: str | None
) -> None:
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, OSError)):
        _get(f"{mtls_url}/metrics", _client_context(pki, cert))


def test_tls12_client_is_refused_when_min_version_is_tls13(pki: Path, mtls_url: str) -> None:
    context = _client_context(pki, "client")
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(urllib.error.URLError) as caught:
        _get(f"{mtls_url}/metrics", context)
    assert isinstance(caught.value.reason, ssl.SSLError)


def test_a_stalled_handshake_does_not_block_other_clients(pki: Path, auth_url: str) -> None:
    port = int(auth_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        status, _ = _get(f"{auth_url}/-/healthy", _client_context(pki), ("prometheus", PASSWORD))
    assert status == 200


def test_probes_need_no_password_over_tls(pki: Path, auth_url: str) -> None:
    for path in ("/-/healthy", "/-/ready"):
        status, _ = _get(f"{auth_url}{path}", _client_context(pki))
        assert status == 200


def _tls_only(pki: Path) -> WebConfig:
    text = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
    return _web_config(pki, "tls-only.yml", text)


def _closed_by_server(sock: socket.socket, within: float = 15) -> bool:
    """Whether the server closes the connection (EOF or reset) within the time given."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except (ConnectionResetError, ssl.SSLError):
        pass
    return True


def test_a_client_that_never_completes_the_handshake_is_closed(pki: Path) -> None:
    for url in _serve(_tls_only(pki), ServerLimits(header_timeout=1, idle_timeout=60)):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert _closed_by_server(sock)


def test_tls_connections_over_the_cap_are_closed(pki: Path) -> None:
    limits = ServerLimits(header_timeout=60, idle_timeout=60, max_connections=2)
    for url in _serve(_tls_only(pki), limits):
        port = int(url.rsplit(":", 1)[1])
        context = _client_context(pki)
        # Each handshake completes in a handler thread, so both are counted once it is done.
        held = [
            context.wrap_socket(
                socket.create_connection(("127.0.0.1", port)), server_hostname="localhost"
            )
            for _ in range(2)
        ]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
                assert _closed_by_server(extra)
        finally:
            for sock in held:
                sock.close()


def test_every_listen_address_serves_the_same_tls_and_auth(pki: Path) -> None:
    config = _web_config(
        pki,
        "two.yml",
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
        f"basic_auth_users:\n  prometheus: '{HASH}'\n",
    )
    app = WebApp(
        exposition=ExpositionCache(),
        is_ready=lambda: True,
        health=lambda: None,
        authenticator=BasicAuthChecker(config.basic_auth_users),
    )
    two = [("127.0.0.1", 0), ("127.0.0.1", 0)]
    server = WebServer(two, app, build_ssl_context(config)).start()
    try:
        assert all(url.startswith("https://") for url in server.urls)
        for port in server.ports:
            url = f"https://localhost:{port}/"
            assert _get(url, _client_context(pki), ("prometheus", PASSWORD))[0] == 200
            assert _get(url, _client_context(pki))[0] == 401
            with pytest.raises((http.client.HTTPException, OSError)):  # no plain HTTP on either
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
    finally:
        server.stop()
