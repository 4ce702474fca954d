"""The exporter as its own process: start it, wait for readiness, read its peak RSS, stop it."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zlib

from bench.common import PROMETHEUS_HEADERS, Scraper, child_env

POLL_COUNT = re.compile(rb"^healthimaging_exporter_poll_duration_seconds_count ([0-9.e+]+)", re.M)


def exporter_command(config_path: str) -> list[str]:
    """Return the installed `healthimaging-exporter --config FILE` command."""
    script = os.path.join(os.path.dirname(sys.executable), "healthimaging-exporter")
    if not os.path.exists(script):
        script = shutil.which("healthimaging-exporter") or ""
    if script:
        return [script, "--config", config_path]
    code = "import sys; from exporter.cli import main; sys.exit(main())"
    return [sys.executable, "-c", code, "--config", config_path]


def _holds(body: bytes, needle: bytes) -> bool:
    """Tell whether a (gzipped) body holds `needle`, inflating only as far as needed.

    The whole body has been received; inflating all of a million image sets' lines here would
    add a second of the benchmark's own time to the exporter's figure.
    """
    if body[:2] != b"\x1f\x8b":
        return needle in body
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    tail = b""
    for start in range(0, len(body), 1 << 16):
        text = tail + inflate.decompress(body[start : start + (1 << 16)])
        if needle in text:
            return True
        tail = text[-len(needle) :]
    return False


class ExporterProcess:
    """A running `healthimaging-exporter`; its log lines are collected as they come."""

    def __init__(self, config_path: str, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.started = time.perf_counter()
        self._proc = subprocess.Popen(
            exporter_command(config_path),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=child_env(),
            text=True,
        )
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self.log.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        """Return the child's process id."""
        return self._proc.pid

    def _check_alive(self) -> None:
        if self._proc.poll() is not None:
            tail = "; ".join(self.log[-3:])
            raise RuntimeError(f"the exporter exited with {self._proc.returncode}: {tail}")

    def wait_ready(self, needle: bytes, timeout: float = 300.0) -> tuple[float, float]:
        """Return seconds from start to /-/ready 200, and to /metrics containing `needle`."""
        deadline = time.monotonic() + timeout
        scraper = Scraper(self.url, timeout=timeout)
        ready_at: float | None = None
        try:
            while time.monotonic() < deadline:
                self._check_alive()
                try:
                    if ready_at is None:
                        status, _ = scraper.get("/-/ready", {})
                        if status == 200:
                            ready_at = time.perf_counter() - self.started
                            continue
                    else:
                        # As Prometheus scrapes: OpenMetrics, gzip (built before ready).
                        status, body = scraper.get("/metrics", PROMETHEUS_HEADERS)
                        if status == 200 and _holds(body, needle):
                            return ready_at, time.perf_counter() - self.started
                except OSError:
                    pass  # not listening yet
                time.sleep(0.01)
        finally:
            scraper.close()
        raise RuntimeError(f"the exporter was not ready within {timeout:g} s")

    def wait_first_poll(self, timeout: float = 300.0) -> None:
        """Wait until /metrics shows a finished poll cycle (its duration histogram's count)."""
        deadline = time.monotonic() + timeout
        scraper = Scraper(self.url, timeout=timeout)
        try:
            while time.monotonic() < deadline:
                self._check_alive()
                _, body = scraper.timed("/metrics", PROMETHEUS_HEADERS)
                match = POLL_COUNT.search(gzip.decompress(body))
                if match and float(match[1]) >= 1:
                    return
                time.sleep(0.5)
        finally:
            scraper.close()
        raise RuntimeError(f"no poll cycle finished within {timeout:g} s")

    def peak_rss_kib(self) -> int:
        """Return the child's peak resident set size (VmHWM) in KiB."""
        with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmHWM in /proc/<pid>/status")

    def stop(self) -> None:
        """Send SIGTERM and wait; kill the child if it does not stop."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._reader.join(timeout=5)
