"""Opaque, tamper-checked pagination tokens bound to the operation and query they came from."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from typing import Any

from .errors import ValidationError

_MAC_BYTES = 12


class TokenCodec:
    """Encodes a cursor as base64url(HMAC + JSON), so garbage or foreign tokens are refused."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes | None = None) -> None:
        """Use a fresh random secret unless one is given (tests may pin it)."""
        self._secret = secret if secret is not None else secrets.token_bytes(16)

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    @staticmethod
    def _scope_tag(scope: str) -> str:
        # A digest keeps tokens short however long the query they are bound to.
        return hashlib.sha256(scope.encode()).hexdigest()[:16]

    def encode(self, scope: str, cursor: Any) -> str:
        """A token for resuming the query named by `scope` after `cursor` (any JSON value)."""
        payload = json.dumps([self._scope_tag(scope), cursor], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(self._mac(payload) + payload).decode("ascii")

    def decode(self, scope: str, token: str) -> Any:
        """The cursor inside `token`; ValidationException if malformed or from another query."""
        try:
            raw = base64.urlsafe_b64decode(token.encode("ascii"))
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise ValidationError("Invalid nextToken") from None
        mac, payload = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise ValidationError("Invalid nextToken")
        token_scope, cursor = json.loads(payload)
        if token_scope != self._scope_tag(scope):
            raise ValidationError("nextToken does not belong to this request")
        return cursor
