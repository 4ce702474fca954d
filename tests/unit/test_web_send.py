"""Gathered sends: tens of thousands of kept segments go out in order, with partial sends."""

from __future__ import annotations

import random
import socket
import threading

from exporter.web import send_gathered


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
