"""moto's standalone server (S3, SQS, ...) on a free loopback port, in its own process.

A subprocess, not `ThreadedMotoServer` in the test process: moto keeps its backends in module
globals, so a server per process gives each test session clean state of its own, and nothing
of moto is imported into the process under test (no in-process patching of any kind).
`moto_server -p0` binds a free port and prints it ("Running on http://127.0.0.1:PORT").
"""

from __future__ import annotations

import contextlib
import http.client
import queue
import re
import subprocess
import sys
import threading
import time
from types import TracebackType
from typing import Any

import boto3
import botocore.config

_RUNNING = re.compile(r"Running on (http://127\.0\.0\.1:(\d+))")
REGION = "us-east-1"


class MotoServer:
    """`python -m moto.server -H 127.0.0.1 -p0`; start() returns once it answers HTTP."""

    def __init__(self, start_timeout: float = 60.0) -> None:
        """Nothing runs until start()."""
        self._start_timeout = start_timeout
        self._process: subprocess.Popen[str] | None = None
        self._drain: threading.Thread | None = None
        self.url = ""
        self.port = 0

    def start(self) -> MotoServer:
        """Spawn the server, read its port from its banner and wait until it answers."""
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()
        stderr = self._process.stderr
        assert stderr is not None

        def drain() -> None:
            # Werkzeug logs every request on stderr: keep reading so the pipe never fills.
            for line in stderr:
                lines.put(line)
            lines.put(None)

        self._drain = threading.Thread(target=drain, name="moto-stderr", daemon=True)
        self._drain.start()
        deadline = time.monotonic() + self._start_timeout
        seen: list[str] = []
        while not self.url:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.stop()
                raise RuntimeError("moto server did not start: " + " | ".join(seen[-5:]))
            seen.append(line.strip())
            match = _RUNNING.search(line)
            if match:
                self.url, self.port = match[1], int(match[2])
        self._wait_ready(deadline)
        return self

    def _wait_ready(self, deadline: float) -> None:
        while True:
            try:
                status, _ = self.request("GET", "/moto-api/data.json")
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("moto server did not answer")
            time.sleep(0.05)

    def request(self, method: str, path: str) -> tuple[int, bytes]:
        """One plain HTTP request to the server (its /moto-api/ control routes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def reset(self) -> None:
        """Forget every bucket, queue and message (moto's /moto-api/reset)."""
        status, body = self.request("POST", "/moto-api/reset")
        if status != 200:
            raise RuntimeError(f"moto reset failed: {status} {body[:200]!r}")

    def client(self, service: str) -> Any:
        """A boto3 client for `service` at this server, with dummy credentials (S3 path-style)."""
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=botocore.config.Config(s3={"addressing_style": "path"}),
        )

    def stop(self) -> None:
        """Terminate the server and reap it; safe to call twice."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stderr is not None:
            with contextlib.suppress(OSError):
                process.stderr.close()
        if self._drain is not None:
            self._drain.join(timeout=10)

    def __enter__(self) -> MotoServer:
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
