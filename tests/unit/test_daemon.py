"""The runtime's job guard: a crashed run is counted and logged, and the schedule goes on."""

from __future__ import annotations

import logging

import pytest

from exporter.daemon import _guarded


def test_a_crashed_run_is_counted_logged_in_one_line_and_does_not_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="exporter")
    crashed: list[str] = []

    def bug() -> None:
        raise RuntimeError("a bug")

    run = _guarded("poll cycle", bug, crashed.append)
    run()
    run()
    assert crashed == ["poll cycle", "poll cycle"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "poll cycle crashed: RuntimeError: a bug; it runs again on schedule"
    ] * 2
    assert all(r.exc_info is None for r in errors)  # the traceback only at debug


def test_a_run_that_succeeds_counts_nothing() -> None:
    crashed: list[str] = []
    _guarded("reload", lambda: None, crashed.append)()
    assert crashed == []
