"""Scenario: restart to ready, serving the persisted metrics, at 100k (`all`) and 1M image sets."""

from __future__ import annotations

from bench import fleet
from bench.common import Figure, denied_emulator, median
from bench.process import ExporterProcess

TARGET_SECONDS = 3.0  # 1M image sets, failures_only (issue 16)
TARGET_100K_SECONDS = 2.0  # 100k, all, "with margin"


def restart(
    state_path: str, endpoint_url: str, needle: bytes, name: str, per_image_set: str = "all"
) -> tuple[float, float]:
    """Start the exporter; return seconds to /-/ready 200 and to /metrics holding `needle`."""
    port = fleet.free_port()
    config = fleet.write_config(state_path, endpoint_url, port, f"{name}.yaml", per_image_set)
    process = ExporterProcess(config, port)
    try:
        return process.wait_ready(needle)
    finally:
        process.stop()


def run(quick: bool) -> list[Figure]:
    """Time restarts at 100k (`all`) and 1M (`failures_only`); quick: 1,000 and 2,000."""
    sizes = (
        ((1_000, "all"), (2_000, "failures_only"))
        if quick
        else (
            (100_000, "all"),
            (1_000_000, "failures_only"),
        )
    )
    out: list[Figure] = []
    for image_sets, mode in sizes:
        out += _run_size(image_sets, mode, 1 if quick else 3, not quick)
    return out


def _run_size(image_sets: int, mode: str, repeats: int, checked: bool) -> list[Figure]:
    state = fleet.state_file(image_sets, 5 * image_sets)
    shown = state.first_image_set if mode == "all" else state.first_shown_image_set
    needle = f'image_set_id="{shown}"'.encode()
    full: list[tuple[float, float]] = []
    empty: list[tuple[float, float]] = []
    with denied_emulator() as emulator:
        for attempt in range(repeats):
            path = fleet.copy_state(state, f"restart-{attempt}.db")
            full.append(restart(path, emulator.url, needle, f"restart-{attempt}", mode))
            empty_path = fleet.empty_state(f"restart-empty-{image_sets}-{attempt}.db")
            empty.append(
                restart(
                    empty_path,
                    emulator.url,
                    b"healthimaging_exporter_build_info",
                    f"restart-empty-{attempt}",
                    mode,
                )
            )
    size = f"{image_sets // 1000}k" if image_sets < 1_000_000 else f"{image_sets // 10**6}M"
    size = f"{size}_{mode}"
    baseline = f"the same with an empty state (median of {repeats})"
    to_metrics = [m for _, m in full]
    to_ready = [r for r, _ in full]
    target = TARGET_SECONDS if image_sets >= 1_000_000 else TARGET_100K_SECONDS
    spread = f"min {min(to_metrics):.2f} / max {max(to_metrics):.2f} s of {repeats}"
    return [
        Figure(
            f"restart_to_metrics_{size}",
            median(to_metrics),
            "s",
            median([m for _, m in empty]),
            f"{baseline}; {spread}",
            f"<= {target:g} s" if checked else "",
            median(to_metrics) <= target if checked else None,
        ),
        Figure(
            f"restart_to_ready_{size}",
            median(to_ready),
            "s",
            median([r for r, _ in empty]),
            f"{baseline}; min {min(to_ready):.2f} / max {max(to_ready):.2f} s",
            f"<= {TARGET_SECONDS:g} s" if checked and image_sets >= 1_000_000 else "",
            median(to_ready) <= TARGET_SECONDS if checked and image_sets >= 1_000_000 else None,
        ),
    ]
