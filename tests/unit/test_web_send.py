"""Sends of /metrics bodies: kept segments gathered in order; plain bodies exactly as declared."""

from __future__ import annotations

import random
import socket
import threading

import pytest

from exporter.web import BodyLengthError, send_exactly, send_gathered


def test_every_part_arrives_in_order_through_partial_sends() -> None:
    rng = random.Random(4)
    parts = [rng.randbytes(rng.choice((0, 1, 700, 5000, 70_000))) for _ in range(3000)]
    sender, receiver = socket.socketpair()
    # A small send buffer: sendmsg returns after part of a batch, often mid-buffer.
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    received = bytearray()

    def drain() -> None:
        while chunk := receiver.recv(1 << 16):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        send_gathered(sender, parts)
    finally:
        sender.close()
        reader.join(timeout=60)
        receiver.close()
    assert not reader.is_alive()
    assert bytes(received) == b"".join(parts)


def received_by_send_exactly(pieces: list[bytes], length: int) -> tuple[bytes, Exception | None]:
    """Send through a socket pair; return what arrived and what send_exactly raised."""
    sender, receiver = socket.socketpair()
    raised: Exception | None = None
    try:
        send_exactly(sender, iter(pieces), length)
    except BodyLengthError as exc:
        raised = exc
    finally:
        sender.close()
    received = bytearray()
    while chunk := receiver.recv(1 << 16):
        received.extend(chunk)
    receiver.close()
    return bytes(received), raised


def test_a_plain_body_is_sent_exactly_as_long_as_declared() -> None:
    pieces = [b"a" * 10, b"", b"b" * 20]
    assert received_by_send_exactly(pieces, 30) == (b"a" * 10 + b"b" * 20, None)
    # Longer than declared: nothing past the declared length is sent (the client would read
    # it as the next response); shorter: said, so the connection is closed, not left waiting.
    sent, raised = received_by_send_exactly(pieces, 25)
    assert sent == b"a" * 10 and isinstance(raised, BodyLengthError)
    assert "runs past its declared 25 bytes" in str(raised)
    sent, raised = received_by_send_exactly(pieces, 31)
    assert sent == b"a" * 10 + b"b" * 20 and "1 bytes short of its declared 31" in str(raised)


@pytest.mark.parametrize("length", [0, 1])
def test_an_empty_body_is_sent_as_declared_or_said(length: int) -> None:
    sent, raised = received_by_send_exactly([], length)
    assert sent == b"" and (raised is None) == (length == 0)
