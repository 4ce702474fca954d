"""The exposition: both formats from one set of lines, built once, only what scrapers want."""

from __future__ import annotations

import gzip
import random
import zlib
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Gauge, Metric
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.openmetrics import parser as openmetrics_parser

from exporter.metrics.collectors import DatastoreCollector, EventCollector, ImageSetCollector
from exporter.metrics.exposition import (
    GZIP_WBITS,
    PROMETHEUS_DEFAULT,
    STREAM_PIECE,
    Restored,
    coalesce,
    render,
)
from exporter.metrics.families import Family
from exporter.metrics.own import process_registry
from exporter.metrics.view import DatastoreView, FleetView
from exporter.model import (
    FAILED_VERSIONS,
    LAST_FAILURE,
    LAST_FORCED,
    CounterKey,
    ImageSetKey,
    ImageSetSnapshot,
    Version,
)
from exporter.store import StoredBody, StoreError
from tests.helpers import fleet_view

DS = "d" * 32
KEY = ImageSetKey(DS, "i" * 32)
VIEW = fleet_view(
    {KEY: ImageSetSnapshot(KEY, (Version(2, 'WEIRD"NEW\\STATUS', "ACTIVE", True),))},
    {CounterKey(FAILED_VERSIONS, *KEY, "COPY_FAILED"): 3.0},
    {DS: DatastoreView(DS, "all", True, 12.5)},
)
COLLECTORS = (ImageSetCollector(), EventCollector(), DatastoreCollector())


class CountingCollector:
    """Counts how often the fleet is formatted."""

    def __init__(self) -> None:
        self.calls = 0

    def collect(self, view: FleetView) -> Iterator[Family]:
        self.calls += 1
        family = Family("x", "gauge", "help")
        family.add('a="b"', 1)
        yield family


def registry() -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    Gauge("own_gauge", "An own metric.", registry=reg).set(1)
    return reg


def test_both_formats_parse_and_escape_unknown_statuses() -> None:
    exposition = render(registry(), VIEW, COLLECTORS)
    om = exposition.openmetrics.decode()
    assert om.endswith("# EOF\n") and om.count("# EOF") == 1
    families = {f.name: f for f in openmetrics_parser.text_string_to_metric_families(om)}  # type: ignore[no-untyped-call]
    status = families["healthimaging_image_set_versions_by_workflow_status"].samples[0]
    assert status.labels["workflow_status"] == 'WEIRD"NEW\\STATUS'
    assert families["healthimaging_failed_versions"].samples[0].value == 3.0
    assert "own_gauge" in families
    text = exposition.text.decode()
    assert "# TYPE healthimaging_failed_versions_total counter" in text
    assert "healthimaging_up{" in text and "# EOF" not in text


def test_prepared_formats_are_built_once_and_scrapes_are_remembered() -> None:
    counter = CountingCollector()
    exposition = render(registry(), VIEW, (counter,))
    exposition.prepare(PROMETHEUS_DEFAULT)
    assert counter.calls == 1
    body = exposition.gzipped(True)
    assert gzip.decompress(body).endswith(b"# EOF\n")
    assert exposition.gzipped(True) == body and counter.calls == 1
    assert exposition.wanted() == PROMETHEUS_DEFAULT
    plain = b"".join(
        exposition.plain_parts(False)[1]
    )  # a plain scrape: the text format's gzip, inflated
    assert counter.calls == 2
    assert plain == exposition.text and b"# TYPE x gauge" in plain
    assert exposition.wanted() == {True, False}


def test_nothing_scraped_keeps_the_prepared_set() -> None:
    exposition = render(registry(), VIEW, COLLECTORS)
    exposition.prepare({False})
    assert exposition.wanted() == {False}


def test_event_timestamps_and_the_data_store_region_are_gauges() -> None:
    view = fleet_view(
        {},
        {
            CounterKey(FAILED_VERSIONS, *KEY, "COPY_FAILED"): 1.0,
            CounterKey(LAST_FAILURE, *KEY, "COPY_FAILED"): 1700000000.5,
            CounterKey(LAST_FORCED, *KEY): 1700000001.0,
        },
        {DS: DatastoreView(DS, "none", True, 12.5, region="eu-west-1")},
    )
    text = render(registry(), view, COLLECTORS).text.decode()
    labels = f'datastore_id="{DS}",image_set_id="{KEY.image_set_id}"'
    assert "# TYPE healthimaging_image_set_last_failure_timestamp_seconds gauge" in text
    assert (
        "healthimaging_image_set_last_failure_timestamp_seconds"
        f'{{{labels},workflow_status="COPY_FAILED"}} 1700000000.5\n'
    ) in text
    assert (
        f"healthimaging_image_set_last_forced_version_timestamp_seconds{{{labels}}} 1700000001.0\n"
    ) in text
    assert f'healthimaging_datastore_info{{datastore_id="{DS}",region="eu-west-1"}} 1.0\n' in text


class Ticking:
    """A live collector whose value goes up on every collection, as CPU seconds do."""

    def __init__(self) -> None:
        self.value = 0.0

    def collect(self) -> Iterator[Metric]:
        self.value += 1
        yield GaugeMetricFamily("tick", "Collections so far.", value=self.value)


def test_live_lines_are_collected_per_scrape_and_come_last() -> None:
    live = CollectorRegistry(auto_describe=False)
    ticking = Ticking()
    live.register(ticking)
    counter = CountingCollector()
    exposition = render(registry(), VIEW, (counter,), live)
    exposition.prepare({True, False})
    first = exposition.text.decode()
    second = gzip.decompress(exposition.gzipped(False)).decode()
    assert "tick 1.0\n" in first and "tick 2.0\n" in second
    assert first.replace("tick 1.0", "tick 2.0") == second
    assert second.index('x{a="b"}') < second.index("tick 2.0")
    om = b"".join(exposition.plain_parts(True)[1]).decode()
    assert om.endswith("tick 3.0\n# EOF\n") and om.count("# EOF") == 1
    assert counter.calls == 2  # the fleet was formatted once per format, not per scrape


def test_a_scrape_is_one_gzip_member_with_a_correct_trailer() -> None:
    exposition = render(registry(), VIEW, COLLECTORS, process_registry())
    for openmetrics in (True, False):
        body = exposition.gzipped(openmetrics)
        decompressor = zlib.decompressobj(GZIP_WBITS)  # one member; checks CRC and length
        plain = decompressor.decompress(body) + decompressor.flush()
        assert decompressor.eof and decompressor.unused_data == b""
        assert b"healthimaging_up{" in plain and b"process_cpu_seconds_total" in plain
        assert gzip.decompress(body) == plain


def test_without_live_lines_the_formats_still_end_right() -> None:
    exposition = render(registry(), VIEW, COLLECTORS)
    assert exposition.openmetrics.endswith(b"# EOF\n")
    assert b"process_" not in exposition.text and exposition.text.endswith(b"\n")


def test_a_saved_body_that_cannot_be_read_is_said_once_and_formatted_instead(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stored = StoredBody(length=10, crc=0, size=10, generation=0)

    def failing_read() -> Iterator[bytes]:
        yield b"\x00" * 4
        raise StoreError("state.path x: cannot read: disk I/O error")

    exposition = render(
        registry(), VIEW, COLLECTORS, restored={True: Restored(stored, failing_read)}
    )
    with pytest.raises(OSError):
        b"".join(exposition.gzipped_parts(True)[1])  # the scrape under way is cut short
    assert caplog.text.count("the saved exposition cannot be read") == 1
    body = gzip.decompress(exposition.gzipped(True)).decode()  # the next one is formatted
    assert 'image_set_id="' + KEY.image_set_id in body and body.endswith("# EOF\n")


class ManyLines:
    """A family of `count` lines of random labels (about 8x larger plain than gzipped)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def collect(self, view: FleetView) -> Iterator[Family]:
        rng = random.Random(4)
        family = Family("many", "gauge", "help")
        for _ in range(self.count):
            family.add(f'id="{rng.getrandbits(128):032x}"', 1)
        yield family


def test_coalesce_joins_small_parts_and_cuts_large_ones() -> None:
    parts = [b"a" * 10, b"b" * 10, b"c" * 95, b"d" * 5]
    blocks = [bytes(block) for block in coalesce(parts, size=20)]
    assert b"".join(blocks) == b"".join(parts)
    assert all(len(block) <= 20 for block in blocks) and len(blocks) == 7


def test_a_plain_scrape_of_a_large_body_is_inflated_piece_by_piece() -> None:
    exposition = render(registry(), VIEW, (ManyLines(100_000),))
    exposition.gzipped(False)  # the body, joined into one buffer at its first scrape
    length, parts = exposition.plain_parts(False)
    pieces = list(parts)
    assert b"".join(pieces) == exposition.text and len(exposition.text) > 8 * STREAM_PIECE
    assert length == len(exposition.text)  # declared before a byte is inflated
    # Never the whole body at once: each piece is what one input block inflates to.
    assert max(map(len, pieces)) < len(exposition.text) // 4
