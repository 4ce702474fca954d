"""Unit tests of exporter.webconfig: loading, SSL contexts and basic auth."""

from __future__ import annotations

import base64
import shutil
import ssl
import tempfile
import threading
from pathlib import Path

import bcrypt
import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from exporter.webconfig import (
    BCRYPT_MAX_COST,
    WWW_AUTHENTICATE,
    BasicAuthChecker,
    RateLimit,
    WebConfig,
    WebConfigError,
    build_ssl_context,
    load_web_config,
)
from tests.pki import issue, make_ca, run_openssl

DATA = Path(__file__).resolve().parent.parent / "data" / "webconfig"

# Each bad file, with a fragment its one-line error message must contain (the field it names).
BAD_FILES = {
    "invalid_yaml.yml": "not valid YAML at line 2",
    "top_level_list.yml": "(top level): must be a mapping, got list",
    "unknown_top_level_field.yml": "tls_config: unknown key",
    "unknown_tls_field.yml": "tls_server_config.certfile: unknown key",
    "tls_not_mapping.yml": "tls_server_config: must be a mapping, got string",
    "missing_cert_file.yml": "tls_server_config.cert_file: required",
    "missing_key_file.yml": "tls_server_config.key_file: required",
    "cert_and_cert_file.yml": "tls_server_config.cert_file: set either cert_file or cert",
    "cert_file_not_on_disk.yml": "tls_server_config.cert_file: file",
    "bad_client_auth_type.yml": "tls_server_config.client_auth_type: must be one of NoClientCert",
    "client_ca_without_client_auth.yml": "tls_server_config.client_ca_file: client CA set",
    "verify_without_client_ca.yml": "tls_server_config.client_ca_file: required when",
    "insecure_min_version.yml": "tls_server_config.min_version: TLS10 is insecure",
    "bad_max_version.yml": "tls_server_config.max_version: must be TLS12 or TLS13",
    "max_below_min_version.yml": "tls_server_config.max_version: lower than min_version",
    "unknown_cipher_suite.yml": "tls_server_config.cipher_suites: unknown or insecure",
    "client_allowed_sans.yml": "tls_server_config.client_allowed_sans: not supported",
    "rate_limit_bare_number.yml": "rate_limit.interval: must be a duration such as 1s",
    "rate_limit_zero_burst.yml": "rate_limit.burst: must be 1 to 1000000 when interval is set",
    "rate_limit_unknown_field.yml": "rate_limit.per_client: unknown key",
    "rate_limit_burst_string.yml": "rate_limit.burst: must be an integer, got string",
    "http2_not_boolean.yml": "http_server_config.http2: must be a boolean, got string",
    "unknown_header.yml": "http_server_config.headers.Server: this header can not be configured",
    "bad_x_frame_options.yml": "http_server_config.headers.X-Frame-Options: must be one of",
    "users_not_mapping.yml": "basic_auth_users: must be a mapping, got list",
    "plaintext_password.yml": "basic_auth_users.prometheus: expected a bcrypt hash",
    "numeric_password.yml": "basic_auth_users.prometheus: expected a bcrypt hash",
    "username_with_colon.yml": "basic_auth_users.prom:etheus: usernames cannot contain ':'",
    "truncated_hash.yml": "basic_auth_users.prometheus: expected a bcrypt hash",
    "alias.yml": "not valid YAML at line 3, column 7: aliases (*name) are not allowed",
    "deep_nesting.yml": "exceeded maximum nesting depth",
    "several_errors.yml": "tls_config: unknown key (expected one of basic_auth_users, "
    "http_server_config, rate_limit, tls_server_config); "
    "http_server_config.headers.Server: this header can not be configured; "
    "http_server_config.http2: must be a boolean, got string",
    "bcrypt_cost_too_high.yml": "basic_auth_users.prometheus: bcrypt cost 31 is above 14",
    "bcrypt_cost_too_low.yml": "basic_auth_users.prometheus: bcrypt cost 3 is below 4",
}

FAST_HASH = bcrypt.hashpw(b"s3cret:with colon", bcrypt.gensalt(rounds=4))


def basic(user: str, password: str) -> str:
    """An Authorization header value."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for localhost and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca", cn="test-ca")
    issue(d, "ca", "server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
          "extendedKeyUsage=serverAuth")  # fmt: skip
    issue(d, "ca", "client", "prometheus", "extendedKeyUsage=clientAuth")
    return d


def write(d: Path, text: str, name: str = "web.yml") -> Path:
    """Write a web config file."""
    path = d / name
    path.write_text(text)
    return path


# --- loading ------------------------------------------------------------------------------------


def test_none_means_plain_http_without_auth() -> None:
    config = load_web_config(None)
    assert config == WebConfig()
    assert config.tls is None
    assert dict(config.basic_auth_users) == {}
    assert build_ssl_context(config) is None
    checker = BasicAuthChecker(config.basic_auth_users)
    assert not checker.enabled()
    assert checker.check(None)


@pytest.mark.parametrize("text", ["", "# nothing\n", "tls_server_config:\nbasic_auth_users:\n"])
def test_empty_file_means_plain_http_without_auth(tmp_path: Path, text: str) -> None:
    config = load_web_config(write(tmp_path, text))
    assert config.tls is None
    assert dict(config.basic_auth_users) == {}
    assert build_ssl_context(config) is None


def test_full_config_is_parsed_with_paths_relative_to_the_file(pki: Path) -> None:
    text = f"""
tls_server_config:
  cert_file: server.pem
  key_file: {pki / "server.key"}
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.pem
  min_version: TLS13
  prefer_server_cipher_suites: false
http_server_config:
  http2: false
  headers:
    x-frame-options: DENY
    X-Content-Type-Options: nosniff
    Strict-Transport-Security: max-age=31536000
basic_auth_users:
  prometheus: {FAST_HASH.decode()}
"""
    config = load_web_config(write(pki, text))
    tls = config.tls
    assert tls is not None
    assert tls.cert_file == pki / "server.pem"
    assert tls.key_file == pki / "server.key"
    assert tls.client_ca_file == pki / "ca.pem"
    assert tls.client_auth_type == "RequireAndVerifyClientCert"
    assert tls.min_version == ssl.TLSVersion.TLSv1_3
    assert tls.max_version == ssl.TLSVersion.TLSv1_3
    assert tls.prefer_server_cipher_suites is False
    assert config.http2 is False
    assert dict(config.headers) == {
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Strict-Transport-Security": "max-age=31536000",
    }
    assert dict(config.basic_auth_users) == {"prometheus": FAST_HASH}
    assert config.path == pki / "web.yml"
    with pytest.raises(TypeError):
        config.basic_auth_users["intruder"] = FAST_HASH  # type: ignore[index]
    assert FAST_HASH.decode() not in repr(config)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rate_limit:\n  interval: 1s\n  burst: 10\n", RateLimit(1.0, 10)),
        ("rate_limit:\n  interval: 1m30s\n  burst: 1\n", RateLimit(90.0, 1)),
        ("rate_limit:\n  interval: 250ms\n  burst: 3\n", RateLimit(0.25, 3)),
        ("rate_limit:\n  interval: 0\n  burst: 0\n", RateLimit()),  # 0 turns it off
        ("rate_limit:\n  interval: 0s\n", RateLimit()),
        ("rate_limit:\n", RateLimit()),
        ("{}\n", RateLimit()),
    ],
)
def test_rate_limit_is_read_as_the_exporter_toolkit_does(
    tmp_path: Path, text: str, expected: RateLimit
) -> None:
    limit = load_web_config(write(tmp_path, text)).rate_limit
    assert limit == expected
    assert limit.enabled is (expected.interval_seconds > 0)


def test_every_bad_file_has_an_expected_message() -> None:
    assert sorted(p.name for p in DATA.iterdir()) == sorted(BAD_FILES)


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_gives_a_one_line_error_naming_the_field(name: str) -> None:
    path = DATA / name
    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"web config {path}: ")
    assert BAD_FILES[name] in message
    assert isinstance(caught.value, ValueError)


def test_errors_never_echo_a_password() -> None:
    with pytest.raises(WebConfigError) as caught:
        load_web_config(DATA / "plaintext_password.yml")
    assert "hunter2" not in str(caught.value)


def test_missing_file_is_a_web_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    with pytest.raises(WebConfigError, match=r"nope.yml: cannot read: No such file"):
        load_web_config(missing)


def test_key_file_that_is_a_folder_is_reported(pki: Path, tmp_path: Path) -> None:
    (tmp_path / "server.key").mkdir()
    path = write(tmp_path, f"tls_server_config:\n  cert_file: {pki / 'server.pem'}\n"
                 "  key_file: server.key\n")  # fmt: skip
    with pytest.raises(WebConfigError, match=r"tls_server_config.key_file: file .* not a regular"):
        load_web_config(path)


# --- SSL context --------------------------------------------------------------------------------


def tls_file(pki: Path, extra: str = "") -> Path:
    """A web config with the test server certificate, plus extra tls_server_config lines."""
    text = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n" + extra
    return write(pki, text, f"web-{abs(hash(extra))}.yml")


def test_server_context_defaults(pki: Path) -> None:
    context = build_ssl_context(load_web_config(tls_file(pki)))
    assert context is not None
    assert context.verify_mode == ssl.CERT_NONE
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.maximum_version == ssl.TLSVersion.TLSv1_3
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_CIPHER_SERVER_PREFERENCE


@pytest.mark.parametrize(
    ("auth", "mode"),
    [
        ("RequestClientCert", ssl.CERT_NONE),
        ("VerifyClientCertIfGiven", ssl.CERT_OPTIONAL),
        ("RequireAnyClientCert", ssl.CERT_REQUIRED),
        ("RequireAndVerifyClientCert", ssl.CERT_REQUIRED),
    ],
)
def test_client_auth_types(pki: Path, auth: str, mode: ssl.VerifyMode) -> None:
    ca = "  client_ca_file: ca.pem\n" if auth != "RequestClientCert" else ""
    context = build_ssl_context(load_web_config(tls_file(pki, f"  client_auth_type: {auth}\n{ca}")))
    assert context is not None
    assert context.verify_mode == mode
    if mode != ssl.CERT_NONE:
        assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test-ca"),),)]


def test_cipher_suites_restrict_tls12(pki: Path) -> None:
    extra = "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256]\n"
    context = build_ssl_context(load_web_config(tls_file(pki, extra)))
    assert context is not None
    tls12 = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 == {"ECDHE-ECDSA-AES256-GCM-SHA384"}


def test_inline_certificate_and_key(pki: Path) -> None:
    cert = (pki / "server.pem").read_text()
    key = (pki / "server.key").read_text()
    ca = (pki / "ca.pem").read_text()

    def block(name: str, pem: str) -> str:
        return f"  {name}: |\n" + "".join(f"    {line}\n" for line in pem.splitlines())

    text = "tls_server_config:\n" + block("cert", cert) + block("key", key) + block("client_ca", ca)
    text += "  client_auth_type: RequireAndVerifyClientCert\n"
    config = load_web_config(write(pki, text, "inline.yml"))
    assert config.tls is not None
    assert "PRIVATE KEY" not in repr(config)
    context = build_ssl_context(config)
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert len(context.get_ca_certs()) == 1


def test_key_not_matching_certificate(pki: Path) -> None:
    path = write(
        pki, "tls_server_config:\n  cert_file: server.pem\n  key_file: client.key\n", "m.yml"
    )
    with pytest.raises(WebConfigError, match=r"tls_server_config.cert_file: cannot load"):
        build_ssl_context(load_web_config(path))


def test_encrypted_key_is_refused_without_prompting(pki: Path, tmp_path: Path) -> None:
    run_openssl(
        tmp_path, "pkey", "-in", str(pki / "server.key"), "-out", "encrypted.key",
        "-aes256", "-passout", "pass:secret",
    )  # fmt: skip
    assert "ENCRYPTED" in (tmp_path / "encrypted.key").read_text()
    shutil.copy(pki / "server.pem", tmp_path / "server.pem")
    path = write(
        tmp_path, "tls_server_config:\n  cert_file: server.pem\n  key_file: encrypted.key\n"
    )
    with pytest.raises(WebConfigError, match=r"tls_server_config.key_file: the key is encrypted"):
        build_ssl_context(load_web_config(path))


def test_certificate_file_that_is_not_pem(pki: Path, tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    shutil.copy(pki / "server.key", tmp_path / "server.key")
    path = write(tmp_path, "tls_server_config:\n  cert_file: junk.pem\n  key_file: server.key\n")
    with pytest.raises(WebConfigError) as caught:
        build_ssl_context(load_web_config(path))
    assert "tls_server_config.cert_file: cannot load certificate and key" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_client_ca_that_is_not_pem(pki: Path, tmp_path: Path) -> None:
    for name in ("server.pem", "server.key"):
        shutil.copy(pki / name, tmp_path / name)
    (tmp_path / "ca.pem").write_text("garbage\n")
    path = tls_file(tmp_path, "  client_auth_type: RequireAndVerifyClientCert\n"
                    "  client_ca_file: ca.pem\n")  # fmt: skip
    with pytest.raises(WebConfigError, match=r"tls_server_config.client_ca_file: cannot load CA"):
        build_ssl_context(load_web_config(path))


# --- basic auth ---------------------------------------------------------------------------------


def test_right_password_is_accepted_and_cached() -> None:
    checker = BasicAuthChecker({"prometheus": FAST_HASH})
    assert checker.enabled()
    assert checker.check(basic("prometheus", "s3cret:with colon"))
    assert checker.check(basic("prometheus", "s3cret:with colon"))
    assert checker.check("basic  " + basic("prometheus", "s3cret:with colon")[6:])


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Basic",
        "Basic ",
        "Bearer abc",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
        basic("prometheus", "wrong"),
        basic("prometheus", ""),
        basic("Prometheus", "s3cret:with colon"),
        basic("nobody", "s3cret:with colon"),
        basic("prometheus", "s3cret:with colon" + "x" * 100),
    ],
)
def test_wrong_or_malformed_credentials_are_refused(header: str | None) -> None:
    checker = BasicAuthChecker({"prometheus": FAST_HASH})
    assert checker.check(basic("prometheus", "s3cret:with colon"))  # populate the cache first
    assert not checker.check(header)


def test_password_longer_than_bcrypt_limit_is_refused() -> None:
    long_password = "p" * 72
    hashed = bcrypt.hashpw(long_password.encode(), bcrypt.gensalt(rounds=4))
    checker = BasicAuthChecker({"u": hashed})
    assert checker.check(basic("u", long_password))
    assert not checker.check(basic("u", long_password + "extra"))


def test_htpasswd_2y_hashes_are_accepted(tmp_path: Path) -> None:
    hashed = "$2y$" + bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()[4:]
    config = load_web_config(write(tmp_path, f"basic_auth_users:\n  alice: '{hashed}'\n"))
    checker = BasicAuthChecker(config.basic_auth_users)
    assert checker.check(basic("alice", "pw"))
    assert not checker.check(basic("alice", "pw2"))


def test_several_users(tmp_path: Path) -> None:
    users = {
        name: bcrypt.hashpw(name.encode() + b"-pw", bcrypt.gensalt(rounds=4)) for name in "abc"
    }
    checker = BasicAuthChecker(users)
    for name in "abc":
        assert checker.check(basic(name, f"{name}-pw"))
        assert not checker.check(basic(name, "a-pw" if name != "a" else "b-pw"))


class CountingCheck:
    """bcrypt.checkpw, counting its calls and the costs of the hashes it is given."""

    def __init__(self) -> None:
        self.costs: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        with self._lock:
            self.costs.append(int(hashed[4:6]))
        return bcrypt.checkpw(password, hashed)


def test_a_repeated_wrong_password_costs_one_bcrypt_check() -> None:
    check = CountingCheck()
    checker = BasicAuthChecker({"prometheus": FAST_HASH}, checkpw=check)
    for _ in range(50):
        assert not checker.check(basic("prometheus", "wrong"))
        assert not checker.check(basic("mallory", "wrong"))  # an unknown user too
    assert len(check.costs) == 2
    for _ in range(50):
        assert checker.check(basic("prometheus", "s3cret:with colon"))
    assert len(check.costs) == 3  # a success is checked once as well
    assert not checker.check(basic("prometheus", "wrong"))
    assert len(check.costs) == 3  # and does not evict the cached failure


def test_concurrent_identical_attempts_cost_one_bcrypt_check() -> None:
    check = CountingCheck()
    checker = BasicAuthChecker({"prometheus": FAST_HASH}, checkpw=check)
    results: list[bool] = []

    def attempt() -> None:
        results.append(checker.check(basic("prometheus", "wrong")))

    threads = [threading.Thread(target=attempt) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [False] * 16
    assert len(check.costs) == 1


def test_the_result_cache_is_bounded() -> None:
    check = CountingCheck()
    checker = BasicAuthChecker({"prometheus": FAST_HASH}, checkpw=check)
    for i in range(BasicAuthChecker.CACHE_SIZE + 1):
        assert not checker.check(basic("prometheus", f"guess-{i}"))
    assert len(check.costs) == BasicAuthChecker.CACHE_SIZE + 1
    # The newest results are kept; the oldest was dropped to make room.
    assert not checker.check(basic("prometheus", f"guess-{BasicAuthChecker.CACHE_SIZE}"))
    assert len(check.costs) == BasicAuthChecker.CACHE_SIZE + 1
    assert not checker.check(basic("prometheus", "guess-0"))
    assert len(check.costs) == BasicAuthChecker.CACHE_SIZE + 2


def test_unknown_users_are_checked_against_a_hash_of_the_highest_cost() -> None:
    check = CountingCheck()
    users = {
        "a": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)),
        "b": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=5)),
    }
    checker = BasicAuthChecker(users, checkpw=check)
    assert not checker.check(basic("mallory", "pw"))
    assert not checker.check(basic("mallory", "other"))
    assert check.costs == [5, 5]


def test_a_high_cost_hash_does_not_hold_up_the_start() -> None:
    # At cost 31 one bcrypt takes days: building the checker must not compute any.
    top = "$2b$31$" + FAST_HASH.decode()[7:]
    built: list[BasicAuthChecker] = []
    thread = threading.Thread(
        target=lambda: built.append(BasicAuthChecker({"u": top.encode()})), daemon=True
    )
    thread.start()
    thread.join(timeout=60)
    assert built, "building the checker computed a bcrypt hash"
    assert BCRYPT_MAX_COST == 14  # and the web config refuses such a hash (bcrypt_cost_too_high)


def test_challenge_header_names_basic_auth() -> None:
    assert WWW_AUTHENTICATE.startswith("Basic realm=")


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=300)
    | st.text(alphabet="[]{}:,-&*!|>'\"#\n 0123456789abcdefxyz_.$", max_size=200)
    | st.dictionaries(
        st.sampled_from(["tls_server_config", "http_server_config", "basic_auth_users", "x"]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
            max_leaves=10,
        ),
    ).map(yaml.safe_dump)
)
@example("0:\n? '\n\n'\n")  # a key with line breaks once broke the one-line message
def test_any_text_is_a_web_config_or_one_web_config_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "web.yml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            result = load_web_config(path)
        except WebConfigError as exc:
            assert "\n" not in str(exc)
            assert str(exc).startswith(f"web config {path}: ")
        else:
            assert isinstance(result, WebConfig)
