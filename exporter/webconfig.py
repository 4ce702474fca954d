"""The exporter-toolkit web configuration file: TLS, HTTP response headers and basic auth."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import ssl
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import bcrypt

from exporter.configfile import (
    FieldReader,
    YamlFileError,
    describe_type,
    describe_value,
    read_yaml_file,
)

__all__ = [
    "CLIENT_AUTH_TYPES",
    "WWW_AUTHENTICATE",
    "BasicAuthChecker",
    "RateLimit",
    "TLSConfig",
    "WebConfig",
    "WebConfigError",
    "build_ssl_context",
    "load_web_config",
]

#: The challenge to send with a 401 response when basic auth is enabled.
WWW_AUTHENTICATE: Final = 'Basic realm="healthimaging-exporter", charset="UTF-8"'

#: The exporter-toolkit client_auth_type values (Go's crypto/tls ClientAuthType names).
CLIENT_AUTH_TYPES: Final = (
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)

_VERIFYING_AUTH_TYPES: Final = frozenset(CLIENT_AUTH_TYPES[2:])
_TLS_VERSIONS: Final = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_INSECURE_TLS_VERSIONS: Final = frozenset({"TLS10", "TLS11"})

# Go's crypto/tls names of the forward-secret TLS 1.2 suites, in OpenSSL spelling. TLS 1.3 suites
# are not configurable (as in Go), so naming one is accepted and has no effect.
_CIPHER_SUITES: Final = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
}
_TLS13_SUITES: Final = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
)

# Response headers a web config may set, with their allowed values (None: any value).
_HEADERS: Final[Mapping[str, frozenset[str] | None]] = {
    "Content-Security-Policy": None,
    "X-Frame-Options": frozenset({"deny", "sameorigin"}),
    "X-Content-Type-Options": frozenset({"nosniff"}),
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}

_TOP_KEYS: Final = frozenset(
    {"tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"}
)
_TLS_KEYS: Final = frozenset(
    {
        "cert",
        "key",
        "client_ca",
        "cert_file",
        "key_file",
        "client_auth_type",
        "client_ca_file",
        "min_version",
        "max_version",
        "cipher_suites",
        "prefer_server_cipher_suites",
    }
)
_HTTP_KEYS: Final = frozenset({"http2", "headers"})
# Known exporter-toolkit settings this implementation cannot honour; refused rather than ignored.
_UNSUPPORTED: Final = {
    "tls_server_config.client_allowed_sans": "client_allowed_sans",
    "tls_server_config.curve_preferences": "curve_preferences",
}

_BCRYPT_RE: Final = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")
_BCRYPT_MAX_PASSWORD: Final = 72
_BCRYPT_ALPHABET: Final = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
#: The highest bcrypt cost accepted. Go's bcrypt takes up to 31, but each step doubles the time of
#: a check (cost 10: about 70 ms; 14: about 1 s; 31: days), and every new password costs one.
BCRYPT_MAX_COST: Final = 14
_BCRYPT_MIN_COST: Final = 4

# rate_limit.interval: a Go duration (time.ParseDuration), e.g. 1s, 500ms, 1m30s.
_GO_DURATION: Final = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h)")
_GO_DURATION_UNITS: Final = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0
}  # fmt: skip
_RATE_LIMIT_KEYS: Final = frozenset({"interval", "burst"})


class WebConfigError(ValueError):
    """An invalid web configuration; the message is one line and names the field."""


@dataclass(frozen=True)
class TLSConfig:
    """The tls_server_config section; relative paths resolve against the file's folder."""

    cert_file: Path | None = None
    key_file: Path | None = None
    cert: str | None = field(default=None, repr=False)
    key: str | None = field(default=None, repr=False)
    client_ca_file: Path | None = None
    client_ca: str | None = field(default=None, repr=False)
    client_auth_type: str = "NoClientCert"
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
    cipher_suites: tuple[str, ...] = ()
    prefer_server_cipher_suites: bool = True


@dataclass(frozen=True)
class RateLimit:
    """rate_limit: one token bucket for all requests (golang.org/x/time/rate); 0 turns it off."""

    interval_seconds: float = 0.0  # a token is added every interval
    burst: int = 0  # at most this many tokens are saved up

    @property
    def enabled(self) -> bool:
        """True when requests are limited."""
        return self.interval_seconds > 0


@dataclass(frozen=True)
class WebConfig:
    """A loaded web configuration: no TLS and no users means plain HTTP without authentication."""

    tls: TLSConfig | None = None
    basic_auth_users: Mapping[str, bytes] = field(
        default_factory=lambda: MappingProxyType({}), repr=False
    )
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    http2: bool = True
    rate_limit: RateLimit = RateLimit()
    path: Path | None = None


def _fail(where: str, field_name: str, problem: str) -> WebConfigError:
    """Build a one-line WebConfigError naming the file and the field."""
    text = f"web config {where}: {field_name}: {problem}"
    return WebConfigError(" ".join(text.split()))


class _Reader:
    """Typed accessors over one mapping of the file, recording bad fields in the shared reader."""

    def __init__(
        self,
        fields: FieldReader,
        prefix: str,
        data: Mapping[Any, Any],
        allowed: frozenset[str],
    ) -> None:
        self.fields = fields
        self.prefix = prefix
        self.data = data
        for key in data:
            name = f"{prefix}{key}"
            if not isinstance(key, str):
                fields.error(prefix.rstrip("."), "keys must be strings")
            elif name in _UNSUPPORTED:
                fields.error(name, "not supported by this exporter")
            elif key not in allowed:
                fields.error(name, f"unknown key (expected one of {', '.join(sorted(allowed))})")

    def name(self, key: str) -> str:
        """The dotted field name of a key."""
        return f"{self.prefix}{key}"

    def error(self, key: str, problem: str) -> None:
        """Record a problem with the field `key`."""
        self.fields.error(self.name(key), problem)

    def _wrong(self, key: str, what: str, value: object) -> None:
        self.fields.error(self.name(key), f"must be {what}", value, show_value=True)

    def string(self, key: str) -> str | None:
        """A non-empty string, or None when absent, null, empty or wrong."""
        value = self.data.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            self._wrong(key, "a string", value)
            return None
        return value

    def boolean(self, key: str, default: bool) -> bool:
        """A boolean, or the default when absent, null or wrong."""
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self._wrong(key, "a boolean", value)
            return default
        return value

    def mapping(self, key: str) -> Mapping[Any, Any]:
        """A mapping, or an empty one when absent, null or wrong."""
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self._wrong(key, "a mapping", value)
            return {}
        return value

    def strings(self, key: str) -> list[str]:
        """A list of strings, or an empty list when absent, null or wrong."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self._wrong(key, "a list of strings", value)
            return []
        return list(value)


def _resolve(base: Path, value: str | None) -> Path | None:
    """Resolve a file name against the web config's folder, as the exporter-toolkit does."""
    if value is None:
        return None
    path = Path(value)
    return path if path.is_absolute() else base / path


def _unreadable(path: Path | None) -> str | None:
    """Why the file cannot be read, or None when it exists and is readable (or is not set)."""
    if path is None:
        return None
    if not path.is_file():
        return f"file {path} does not exist or is not a regular file"
    if not os.access(path, os.R_OK):
        return f"file {path} is not readable"
    return None


def _tls_version(reader: _Reader, key: str, default: ssl.TLSVersion) -> ssl.TLSVersion:
    """Parse a TLS12/TLS13 version name."""
    value = reader.string(key)
    if value is None:
        return default
    if value in _INSECURE_TLS_VERSIONS:
        reader.error(key, f"{value} is insecure and not supported")
        return default
    if value not in _TLS_VERSIONS:
        reader.error(key, "must be TLS12 or TLS13")
        return default
    return _TLS_VERSIONS[value]


def _parse_tls(fields: FieldReader, base: Path, raw: object) -> TLSConfig | None:
    """Parse and check tls_server_config; None when the section is absent, empty or invalid."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        fields.error("tls_server_config", "must be a mapping", raw, show_value=True)
        return None
    before = len(fields.errors)
    r = _Reader(fields, "tls_server_config.", raw, _TLS_KEYS)
    if all(v is None or v == "" or v == [] for v in raw.values()):
        return None
    cert_file, key_file = r.string("cert_file"), r.string("key_file")
    cert, key = r.string("cert"), r.string("key")
    client_ca_file, client_ca = r.string("client_ca_file"), r.string("client_ca")
    for file_key, inline_key, a, b in (
        ("cert_file", "cert", cert_file, cert),
        ("key_file", "key", key_file, key),
        ("client_ca_file", "client_ca", client_ca_file, client_ca),
    ):
        if a is not None and b is not None:
            r.error(file_key, f"set either {file_key} or {inline_key}, not both")
    if cert_file is None and cert is None and "cert" not in raw:
        r.error("cert_file", "required when tls_server_config is set")
    if key_file is None and key is None and "key" not in raw:
        r.error("key_file", "required when tls_server_config is set")
    auth = r.string("client_auth_type") or "NoClientCert"
    auth_known = auth in CLIENT_AUTH_TYPES
    if not auth_known:
        r.error("client_auth_type", f"must be one of {', '.join(CLIENT_AUTH_TYPES)}")
    has_ca = client_ca_file is not None or client_ca is not None
    if has_ca and auth == "NoClientCert":
        r.error("client_ca_file", "client CA set but client_auth_type is NoClientCert")
    if not has_ca and auth in _VERIFYING_AUTH_TYPES:
        # Python's TLS stack cannot require a certificate without verifying it: ask for the CA.
        r.error("client_ca_file", f"required when client_auth_type is {auth}")
    min_version = _tls_version(r, "min_version", ssl.TLSVersion.TLSv1_2)
    max_version = _tls_version(r, "max_version", ssl.TLSVersion.TLSv1_3)
    if max_version < min_version:
        r.error("max_version", "lower than min_version")
    suites: list[str] = []
    for suite in r.strings("cipher_suites"):
        if suite in _TLS13_SUITES:
            continue
        if suite not in _CIPHER_SUITES:
            r.error("cipher_suites", f"unknown or insecure cipher suite {suite[:60]}")
        suites.append(suite)
    paths = {
        "cert_file": _resolve(base, cert_file),
        "key_file": _resolve(base, key_file),
        "client_ca_file": _resolve(base, client_ca_file),
    }
    for name, path in paths.items():
        problem = _unreadable(path)
        if problem is not None:
            r.error(name, problem)
    prefer = r.boolean("prefer_server_cipher_suites", True)
    if len(fields.errors) > before:
        return None
    return TLSConfig(
        cert_file=paths["cert_file"],
        key_file=paths["key_file"],
        cert=cert,
        key=key,
        client_ca_file=paths["client_ca_file"],
        client_ca=client_ca,
        client_auth_type=auth,
        min_version=min_version,
        max_version=max_version,
        cipher_suites=tuple(suites),
        prefer_server_cipher_suites=prefer,
    )


def _parse_headers(fields: FieldReader, raw: Mapping[Any, Any]) -> dict[str, str]:
    """Check http_server_config.headers against the headers the exporter-toolkit allows."""
    canonical = {name.lower(): name for name in _HEADERS}
    headers: dict[str, str] = {}
    for key, value in raw.items():
        field_name = f"http_server_config.headers.{describe_value(str(key)).strip(chr(39))}"
        name = canonical.get(str(key).lower())
        if name is None:
            fields.error(field_name, "this header can not be configured")
            continue
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            fields.error(field_name, "must be a string", value, show_value=True)
            continue
        if any(c in value for c in "\r\n\0"):
            fields.error(field_name, "control characters are not allowed")
            continue
        allowed = _HEADERS[name]
        if allowed is not None and value.lower() not in allowed:
            fields.error(field_name, f"must be one of {', '.join(sorted(allowed))}")
            continue
        headers[name] = value
    return headers


def _parse_users(where: str, raw: Mapping[Any, Any]) -> dict[str, bytes]:
    """Check basic_auth_users: usernames usable in basic auth, values bcrypt hashes."""
    users: dict[str, bytes] = {}
    for user, hashed in raw.items():
        if not isinstance(user, str) or not user:
            raise _fail(where, "basic_auth_users", "usernames must be non-empty strings")
        field_name = f"basic_auth_users.{user}"
        if ":" in user or any(ord(c) < 0x20 or ord(c) == 0x7F for c in user):
            raise _fail(where, field_name, "usernames cannot contain ':' or control characters")
        if not isinstance(hashed, str) or not _BCRYPT_RE.match(hashed):
            # Never echo the value: it may be a plain-text password by mistake.
            raise _fail(where, field_name, "expected a bcrypt hash ($2a$, $2b$ or $2y$, 60 chars)")
        cost = int(hashed[4:6])
        if cost < _BCRYPT_MIN_COST:
            raise _fail(where, field_name, f"bcrypt cost {cost} is below {_BCRYPT_MIN_COST}")
        if cost > BCRYPT_MAX_COST:
            raise _fail(
                where,
                field_name,
                f"bcrypt cost {cost} is above {BCRYPT_MAX_COST}, the most accepted"
                " (each step doubles the time of a check); rehash with a cost of 10 to 12",
            )
        users[user] = hashed.encode("ascii")
    return users


def _parse_duration(value: object) -> float | None:
    """Parse a Go duration (1s, 500ms, 1m30s) or 0 into seconds; None if it is not one."""
    if value == 0 and not isinstance(value, bool):
        return 0.0
    text = value.strip() if isinstance(value, str) else None
    if text == "0":
        return 0.0
    if not text or _GO_DURATION.sub("", text) != "":
        return None
    seconds = 0.0
    for match in _GO_DURATION.finditer(text):
        number = match.group(0).rstrip("nsuµμmh")
        seconds += float(number) * _GO_DURATION_UNITS[match.group(0)[len(number) :]]
    return seconds


def _parse_rate_limit(fields: FieldReader, raw: Mapping[Any, Any]) -> RateLimit:
    """Check rate_limit: interval (a Go duration, 0 or absent: off) and burst (at least 1)."""
    r = _Reader(fields, "rate_limit.", raw, _RATE_LIMIT_KEYS)
    interval = _parse_duration(raw.get("interval", 0))
    if interval is None:
        r.error("interval", "must be a duration such as 1s, 500ms or 1m30s")
    burst = raw.get("burst", 0)
    if burst is None:
        burst = 0
    if isinstance(burst, bool) or not isinstance(burst, int):
        r.error("burst", f"must be an integer, got {describe_type(burst)}")
        return RateLimit()
    if not interval:
        return RateLimit()
    if not 1 <= burst <= 1_000_000:
        # Go's limiter with burst 0 refuses every request: surely not what was meant.
        r.error("burst", "must be 1 to 1000000 when interval is set")
        return RateLimit()
    return RateLimit(interval_seconds=interval, burst=burst)


def load_web_config(path: str | os.PathLike[str] | None) -> WebConfig:
    """Load and check a web config file; None gives no TLS and no authentication."""
    if path is None:
        return WebConfig()
    file = Path(path)
    where = str(file)
    fields = FieldReader(f"web config {where}", describe=describe_type)
    try:
        data = read_yaml_file(file)
    except YamlFileError as exc:
        raise WebConfigError(f"{fields.source}: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        fields.error("", "must be a mapping", data, show_value=True)
        raise WebConfigError(fields.message())
    top = _Reader(fields, "", data, _TOP_KEYS)
    tls = _parse_tls(fields, file.parent, data.get("tls_server_config"))
    http = _Reader(fields, "http_server_config.", top.mapping("http_server_config"), _HTTP_KEYS)
    headers = _parse_headers(fields, http.mapping("headers"))
    http2 = http.boolean("http2", True)
    rate_limit = _parse_rate_limit(fields, top.mapping("rate_limit"))
    users_raw = top.mapping("basic_auth_users")
    if fields.errors:
        raise WebConfigError(fields.message())
    users = _parse_users(where, users_raw)
    return WebConfig(
        tls=tls,
        basic_auth_users=MappingProxyType(users),
        headers=MappingProxyType(headers),
        http2=http2,
        rate_limit=rate_limit,
        path=file,
    )


class _EncryptedKeyError(Exception):
    """The private key needs a passphrase, which a web config cannot give."""


def _refuse_passphrase() -> bytes:
    """Stand in for OpenSSL's passphrase prompt, which would block a daemon on its terminal."""
    raise _EncryptedKeyError


def _load_chain(context: ssl.SSLContext, tls: TLSConfig) -> None:
    """Load the server certificate and key, from files or inline PEM."""
    if tls.cert is None and tls.key is None:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file), _refuse_passphrase)
        return
    # ssl only loads certificates and keys from files: write inline PEM to a private temporary
    # folder (mode 0700, files 0600) that is removed as soon as it is loaded.
    with tempfile.TemporaryDirectory(prefix="webconfig-") as tmp:
        cert_path, key_path = tls.cert_file, tls.key_file
        if tls.cert is not None:
            cert_path = Path(tmp) / "cert.pem"
            _write_private(cert_path, tls.cert)
        if tls.key is not None:
            key_path = Path(tmp) / "key.pem"
            _write_private(key_path, tls.key)
        context.load_cert_chain(str(cert_path), str(key_path), _refuse_passphrase)


def _write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def build_ssl_context(config: WebConfig) -> ssl.SSLContext | None:
    """Build the server's SSL context; None when the config has no TLS (serve plain HTTP)."""
    tls = config.tls
    if tls is None:
        return None
    where = str(config.path) if config.path is not None else "(in memory)"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = tls.min_version
    context.maximum_version = tls.max_version
    context.options |= ssl.OP_NO_COMPRESSION
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if tls.cipher_suites:
        try:
            context.set_ciphers(":".join(_CIPHER_SUITES[s] for s in tls.cipher_suites))
        except ssl.SSLError as exc:
            raise _fail(where, "tls_server_config.cipher_suites", "none is available") from exc
    try:
        _load_chain(context, tls)
    except _EncryptedKeyError:
        key_field = "key_file" if tls.key is None else "key"
        raise _fail(
            where, f"tls_server_config.{key_field}", "the key is encrypted; use an unencrypted key"
        ) from None
    except (ssl.SSLError, OSError) as exc:
        field_name = "cert_file" if tls.cert is None else "cert"
        reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
        raise _fail(
            where, f"tls_server_config.{field_name}", f"cannot load certificate and key: {reason}"
        ) from exc
    if tls.client_auth_type in ("NoClientCert", "RequestClientCert"):
        # RequestClientCert never verifies the certificate, so it authenticates nothing: as in Go,
        # a client without a certificate gets in; here the certificate is simply not requested.
        context.verify_mode = ssl.CERT_NONE
        return context
    ca_field = "client_ca_file" if tls.client_ca is None else "client_ca"
    try:
        if tls.client_ca is not None:
            context.load_verify_locations(cadata=tls.client_ca)
        else:
            context.load_verify_locations(cafile=str(tls.client_ca_file))
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise _fail(where, f"tls_server_config.{ca_field}", f"cannot load CA: {reason}") from exc
    # RequireAnyClientCert cannot skip verification here, so it is as strict as
    # RequireAndVerifyClientCert; VerifyClientCertIfGiven verifies a certificate when one is sent.
    if tls.client_auth_type == "VerifyClientCertIfGiven":
        context.verify_mode = ssl.CERT_OPTIONAL
    else:
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class BasicAuthChecker:
    """Checks HTTP basic auth credentials against bcrypt hashes, as the exporter-toolkit does.

    Every result, failures included, is remembered in a bounded cache keyed by a keyed digest of
    user, password and hash, so a repeated wrong password costs no bcrypt either; bcrypt checks
    run one at a time, so guessing can take at most one core; an unknown user is checked against
    a dummy hash of the users' highest cost, so timing does not tell which users exist.
    """

    CACHE_SIZE: Final = 256

    def __init__(
        self,
        users: Mapping[str, bytes],
        checkpw: Callable[[bytes, bytes], bool] = bcrypt.checkpw,
    ) -> None:
        """Keep the users; checkpw is bcrypt's, or a stand-in that counts calls in tests."""
        self._users = dict(users)
        self._checkpw = checkpw
        self._key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, bool] = OrderedDict()  # least recently used first
        self._cache_lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()
        self._dummy = b""
        if self._users:
            self._dummy = _dummy_hash(max(_cost(h) for h in self._users.values()))

    def enabled(self) -> bool:
        """True when at least one user is configured, so requests need credentials."""
        return bool(self._users)

    def check(self, authorization_header: str | None) -> bool:
        """True when auth is disabled or the Authorization header carries valid credentials."""
        if not self._users:
            return True
        parsed = _parse_basic(authorization_header)
        if parsed is None:
            return False
        user, password = parsed
        hashed = self._users.get(user)
        known = hashed is not None
        if hashed is None:
            hashed = self._dummy
        key = self._cache_key(user, password, hashed)
        cached = self._cached(key)
        if cached is not None:
            return cached
        with self._bcrypt_lock:
            cached = self._cached(key)  # the same credentials may just have been checked
            if cached is not None:
                return cached
            # bcrypt hashes at most 72 bytes (longer passwords are refused), yet a longer
            # password still costs a check so that neither its length nor the user's existence
            # saves time.
            fits = len(password) <= _BCRYPT_MAX_PASSWORD
            try:
                matched = self._checkpw(password[:_BCRYPT_MAX_PASSWORD], hashed)
            except ValueError:
                matched = False
            ok = known and fits and matched
            self._remember(key, ok)
        return ok

    def _cached(self, key: bytes) -> bool | None:
        with self._cache_lock:
            result = self._cache.get(key)
            if result is not None:
                self._cache.move_to_end(key)
            return result

    def _remember(self, key: bytes, result: bool) -> None:
        with self._cache_lock:
            self._cache[key] = result
            while len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)

    def _cache_key(self, user: str, password: bytes, hashed: bytes) -> bytes:
        """A keyed hash of the credentials, so the cache holds no fast-to-crack password hash."""
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in (user.encode("utf-8"), password, hashed):
            mac.update(len(part).to_bytes(4, "big"))
            mac.update(part)
        return mac.digest()


def _cost(hashed: bytes) -> int:
    """The cost of a bcrypt hash, within what bcrypt accepts."""
    try:
        cost = int(hashed[4:6])
    except ValueError:
        cost = 10
    return min(max(cost, _BCRYPT_MIN_COST), 31)


def _dummy_hash(cost: int) -> bytes:
    """A well-formed bcrypt hash of the given cost that no password matches.

    Made from a fresh salt and a random digest rather than by hashing, which at a high cost
    would hold up the start.
    """
    digest = "".join(secrets.choice(_BCRYPT_ALPHABET) for _ in range(31))
    return bcrypt.gensalt(rounds=cost) + digest.encode("ascii")


def _parse_basic(header: str | None) -> tuple[str, bytes] | None:
    """Split a Basic Authorization header into user and password; None when malformed."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user_bytes, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        user = user_bytes.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return user, password
