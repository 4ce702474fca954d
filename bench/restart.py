"""Scenario 6: restart to ready, serving the persisted metrics, at 100,000 image sets."""

from __future__ import annotations

from bench import fleet
from bench.common import Figure, denied_emulator, median
from bench.process import ExporterProcess

TARGET_SECONDS = 3.0


def restart(state_path: str, endpoint_url: str, needle: bytes, name: str) -> tuple[float, float]:
    """Start the exporter; return seconds to /-/ready 200 and to /metrics holding `needle`."""
    port = fleet.free_port()
    config = fleet.write_config(state_path, endpoint_url, port, f"{name}.yaml")
    process = ExporterProcess(config, port)
    try:
        return process.wait_ready(needle)
    finally:
        process.stop()


def run(quick: bool) -> list[Figure]:
    """Time restarts on a prefilled state and on an empty one (quick: 1,000 image sets)."""
    image_sets = 1_000 if quick else 100_000
    repeats = 1 if quick else 3
    state = fleet.state_file(image_sets, 5 * image_sets)
    needle = f'image_set_id="{state.first_image_set}"'.encode()
    full: list[tuple[float, float]] = []
    empty: list[tuple[float, float]] = []
    with denied_emulator() as emulator:
        for attempt in range(repeats):
            path = fleet.copy_state(state, f"restart-{attempt}.db")
            full.append(restart(path, emulator.url, needle, f"restart-{attempt}"))
            empty_path = fleet.empty_state(f"restart-empty-{attempt}.db")
            empty.append(
                restart(
                    empty_path,
                    emulator.url,
                    b"healthimaging_exporter_build_info",
                    f"restart-empty-{attempt}",
                )
            )
    checked = not quick
    size = f"{image_sets // 1000}k"
    baseline = f"the same with an empty state (median of {repeats})"
    to_metrics = median([m for _, m in full])
    return [
        Figure(
            f"restart_to_metrics_{size}",
            to_metrics,
            "s",
            median([m for _, m in empty]),
            baseline,
            f"<= {TARGET_SECONDS:g} s" if checked else "",
            to_metrics <= TARGET_SECONDS if checked else None,
        ),
        Figure(
            f"restart_to_ready_{size}",
            median([r for r, _ in full]),
            "s",
            median([r for r, _ in empty]),
            baseline,
            "",
            None,
        ),
    ]
