"""Failure reasons: the bounded code of a message, the per-data-store cap, the counts."""

from __future__ import annotations

import pytest

from exporter.model import FAILURES, CounterKey, ImageSetKey, Version
from exporter.reasons import (
    MAX_REASONS,
    OTHER,
    capped_reason,
    failure_increments,
    known_reasons,
    label_reasons,
    reason_code,
    shown_reason,
)

DS = "d" * 32
KEY = ImageSetKey(DS, "i" * 32)
SEED_MESSAGE = "INVALID_REQUEST:  Series of SourceImageSet and DestinationImageSet don't match."


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (SEED_MESSAGE, "INVALID_REQUEST"),
        ("  INTERNAL_ERROR : retry later", "INTERNAL_ERROR"),
        ("ACCESS_DENIED2: x", "ACCESS_DENIED2"),
        ("no code here", OTHER),  # no colon
        ("invalid_request: lower case", OTHER),
        ("AB: too short", OTHER),
        ("A" * 65 + ": too long", OTHER),
        ("A" * 64 + ": longest allowed", "A" * 64),
        ("PATIENT DOE^JOHN: spaces are not a code", OTHER),
        ("1NVALID: starts with a digit", OTHER),
        ("ÉRROR_CODE: not ASCII", OTHER),
        (": empty code", OTHER),
        ("", OTHER),
        (None, OTHER),
        (42, OTHER),
        (["INVALID_REQUEST: in a list"], OTHER),
    ],
)
def test_reason_is_the_leading_code_or_other(message: object, code: str) -> None:
    assert reason_code(message) == code


def test_nothing_after_the_colon_ever_reaches_the_reason() -> None:
    # A message whose code part is long free text with a colon far away is not a code either.
    assert reason_code("X" * 100 + ": tail") == OTHER
    assert reason_code("DICOM_TAG_MISMATCH: PatientName=DOE^JOHN") == "DICOM_TAG_MISMATCH"


def test_cap_turns_new_codes_into_other_once_full() -> None:
    known = {f"CODE_{n:02d}" for n in range(MAX_REASONS)}
    assert capped_reason("CODE_05", known) == "CODE_05"
    assert capped_reason("BRAND_NEW", known) == OTHER
    assert capped_reason("BRAND_NEW", known - {"CODE_05"}) == "BRAND_NEW"
    # `other` takes no place of the cap.
    assert capped_reason("BRAND_NEW", (known - {"CODE_05"}) | {OTHER}) == "BRAND_NEW"
    assert capped_reason(None, set()) == OTHER


def test_failure_increments_count_by_status_and_capped_reason() -> None:
    failed = [
        Version(5, "COPY_FAILED", "ACTIVE", reason="INVALID_REQUEST"),
        Version(4, "COPY_FAILED", "ACTIVE", reason="INVALID_REQUEST"),
        Version(3, "UPDATE_FAILED", "ACTIVE", reason="THIRD"),
        Version(2, "IMPORT_FAILED", "ACTIVE", reason=None),
    ]
    got = failure_increments(KEY, failed, known={"FIRST"}, cap=2)
    assert got == {
        CounterKey(FAILURES, DS, "", "COPY_FAILED", "INVALID_REQUEST"): 2,
        # The cap of 2 is full once INVALID_REQUEST joined FIRST.
        CounterKey(FAILURES, DS, "", "UPDATE_FAILED", OTHER): 1,
        CounterKey(FAILURES, DS, "", "IMPORT_FAILED", OTHER): 1,
    }
    assert failure_increments(KEY, [], known=set()) == {}


def test_known_reasons_come_from_the_persisted_counters() -> None:
    counters = [
        CounterKey(FAILURES, DS, "", "COPY_FAILED", "A_CODE"),
        CounterKey(FAILURES, "e" * 32, "", "COPY_FAILED", "ELSEWHERE"),
        CounterKey("failed_versions", *KEY, "COPY_FAILED"),
    ]
    assert known_reasons(counters, DS) == {"A_CODE"}


def test_info_reasons_are_counted_ones_then_others_up_to_the_cap() -> None:
    allowed = label_reasons({"COUNTED"}, ["ZULU", "ALPHA", None, OTHER, "COUNTED"], cap=2)
    assert allowed == {"COUNTED", "ALPHA"}
    assert shown_reason("ZULU", allowed) == OTHER
    assert shown_reason("ALPHA", allowed) == "ALPHA"
    assert shown_reason(None, allowed) == OTHER
