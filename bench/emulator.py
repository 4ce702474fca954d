"""The emulator's own speed (bench/emulator_speed.py) as a scenario: per-page times, 3 layers."""

from __future__ import annotations

from bench import emulator_speed
from bench.common import Figure


def run(quick: bool) -> list[Figure]:
    """Time list/search pages in the backend, the handler and boto3 (quick: 2,000 image sets)."""
    if quick:
        emulator_speed.IMAGE_SETS = 2_000  # the module reads it when run() is called
    results = emulator_speed.run()
    size = f"{emulator_speed.IMAGE_SETS // 1000}k"
    figures = [
        Figure(f"generate_{size}", results["generate_100k_s"], "s", None, "", "", None),
    ]
    for page in ("list_versions", "search_between"):
        backend = results[f"{page}_backend_s"] * 1e6
        handler = results[f"{page}_handler_s"] * 1e6
        boto3 = results[f"{page}_boto3_s"] * 1e6
        figures += [
            Figure(f"{page}_backend_{size}", backend, "us", None, "", "", None),
            Figure(
                f"{page}_handler_{size}", handler, "us", backend, "backend call alone", "", None
            ),
            Figure(f"{page}_boto3_{size}", boto3, "us", handler, "request handler alone", "", None),
        ]
    return figures
