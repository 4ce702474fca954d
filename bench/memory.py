"""Scenario: peak RSS of the exporter at 100k image sets (`all`) and 1M (`failures_only`)."""

from __future__ import annotations

import subprocess
import sys

from bench import fleet
from bench.common import PROMETHEUS_HEADERS, Figure, Scraper, child_env, denied_emulator, mib
from bench.process import ExporterProcess

TARGET_MIB = 250.0
TARGET_1M_MIB = 300.0 / 1.048576  # 300 MB (issue 16), in MiB
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so it would show the forking parent.
BARE = (
    "import exporter.cli, exporter.daemon; "
    "print([int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
)


def bare_import_kib() -> int:
    """Return the peak RSS of a fresh python that only imports the exporter (least of 3)."""
    # Least of three: the first run may also compile changed modules to bytecode.
    peaks = []
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", BARE],
            capture_output=True,
            text=True,
            check=True,
            env=child_env(),
        )
        peaks.append(int(out.stdout.strip()))
    return min(peaks)


def exporter_peak_kib(
    state_path: str, endpoint_url: str, needle: bytes, name: str, per_image_set: str = "all"
) -> int:
    """Start the exporter on a state file; after readiness, its first poll and scrapes: VmHWM."""
    port = fleet.free_port()
    config = fleet.write_config(state_path, endpoint_url, port, f"{name}.yaml", per_image_set)
    process = ExporterProcess(config, port)
    try:
        process.wait_ready(needle)
        process.wait_first_poll()
        scraper = Scraper(process.url)
        try:
            scraper.timed("/metrics", PROMETHEUS_HEADERS)
        finally:
            scraper.close()
        return process.peak_rss_kib()
    finally:
        process.stop()


def run(quick: bool) -> list[Figure]:
    """Peak RSS at 100k (`all`) and 1M (`failures_only`); quick: 1,000 and 2,000 image sets."""
    bare = bare_import_kib()
    out: list[Figure] = []
    with denied_emulator() as emulator:
        for image_sets, mode in fleet.sizes(quick):
            versions = 5 * image_sets
            state = fleet.state_file(image_sets, versions)
            shown = state.first_image_set if mode == "all" else state.first_shown_image_set
            full = exporter_peak_kib(
                fleet.copy_state(state, "memory.db"),
                emulator.url,
                f'image_set_id="{shown}"'.encode(),
                "memory",
                mode,
            )
            checked = not quick
            target = TARGET_1M_MIB if image_sets >= 1_000_000 else TARGET_MIB
            size = fleet.size_name(image_sets)
            out.append(
                Figure(
                    f"peak_rss_{size}_{versions // 1000}k_versions_{mode}",
                    mib(full),
                    "MiB",
                    mib(bare),
                    "bare python importing exporter.cli and exporter.daemon (VmHWM)",
                    f"<= {target:g} MiB" if checked else "",
                    mib(full) <= target if checked else None,
                )
            )
        empty = exporter_peak_kib(
            fleet.empty_state("memory-empty.db"),
            emulator.url,
            b"healthimaging_exporter_build_info",
            "memory-empty",
        )
    out.append(
        Figure(
            "peak_rss_empty_state",
            mib(empty),
            "MiB",
            mib(bare),
            "bare python importing exporter.cli and exporter.daemon (VmHWM)",
            "",
            None,
        )
    )
    return out
