"""How fast the emulator answers at 100,000 image sets, server-side and over loopback with boto3."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from exporter.emulator import Backend, EmulatorServer
from exporter.emulator import operations as ops
from exporter.emulator.messages import Request
from exporter.emulator.routes import dispatch
from exporter.emulator.testing import SIGV4, client_for

IMAGE_SETS = 100_000
DAY = 86_400.0


def _per_call(fn: Callable[[], Any], repeat: int) -> float:
    """Mean seconds per call over `repeat` calls, after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def run() -> dict[str, float]:
    """Generate 100,000 image sets and time list/search pages three ways; seconds per page."""
    now = time.time()
    backend = Backend(clock=lambda: now)
    ds = backend.create_datastore(name="bench")
    start = time.perf_counter()
    ids = backend.generate(ds, IMAGE_SETS, seed=1)
    results: dict[str, float] = {"generate_100k_s": time.perf_counter() - start}
    # The set with the longest history, so a versions page is as full as it gets.
    with backend.lock:
        longest = max(ids, key=lambda i: len(backend.store(ds).image_sets[i].versions))
    window = {
        "filters": [
            {
                "operator": "BETWEEN",
                "values": [{"updatedAt": now - 2 * DAY}, {"updatedAt": now - DAY}],
            }
        ]
    }
    results["list_versions_backend_s"] = _per_call(
        lambda: ops.list_image_set_versions(backend, ds, longest, 50), 2000
    )
    results["search_between_backend_s"] = _per_call(
        lambda: ops.search_image_sets(backend, ds, window, 50), 500
    )
    list_request = Request(
        "POST",
        f"/datastore/{ds}/imageSet/{longest}/listImageSetVersions",
        {"maxResults": "50"},
        {"Authorization": SIGV4},
    )
    search_request = Request(
        "POST",
        f"/datastore/{ds}/searchImageSets",
        {"maxResults": "50"},
        {"Authorization": SIGV4},
        json.dumps(window).encode(),
    )
    results["list_versions_handler_s"] = _per_call(lambda: dispatch(backend, list_request), 2000)
    results["search_between_handler_s"] = _per_call(lambda: dispatch(backend, search_request), 500)
    with EmulatorServer(dataset=None, backend=backend) as server:
        client = client_for(server.url)
        results["list_versions_boto3_s"] = _per_call(
            lambda: client.list_image_set_versions(datastoreId=ds, imageSetId=longest), 300
        )
        results["search_between_boto3_s"] = _per_call(
            lambda: client.search_image_sets(
                datastoreId=ds,
                maxResults=50,
                searchCriteria=window,
            ),
            100,
        )
    return results


def main() -> None:
    """Print the measurements as a small table."""
    results = run()
    print(f"{'measurement':<28} {'value':>12}")
    for name, value in results.items():
        shown = f"{value:.2f} s" if name.endswith("100k_s") else f"{value * 1e6:.1f} us"
        print(f"{name:<28} {shown:>12}")


if __name__ == "__main__":
    main()
