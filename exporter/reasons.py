"""Pure functions: a failed version's bounded `reason`, and the failures counted by reason.

A failed version's `message` is free text (it may name series, studies, files). Only its leading
code leaves the process: the upper-case word before the first colon when it matches REASON_CODE
(`INVALID_REQUEST: Series of ... don't match.` gives `INVALID_REQUEST`), else `other`. A data
store exports at most MAX_REASONS distinct codes; beyond them a failure's reason is `other`.
The codes a data store has are those of its persisted `failures` counters, so the cap holds
across restarts without a table of its own.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Collection, Iterable

from exporter.model import FAILURES, CounterKey, ImageSetKey, Version

REASON_CODE = re.compile(r"[A-Z][A-Z0-9_]{2,63}")
OTHER = "other"
MAX_REASONS = 20
# Only the text before the first colon is looked at; a longer prefix cannot match anyway.
_PREFIX_LIMIT = 80


def reason_code(message: object) -> str:
    """Return the upper-case code before a message's first colon, or `other`."""
    if not isinstance(message, str):
        return OTHER
    head, colon, _ = message[:_PREFIX_LIMIT].partition(":")
    code = head.strip()
    if not colon or not REASON_CODE.fullmatch(code):
        return OTHER
    # Interned: a handful of distinct codes shared by every failed version in memory.
    return sys.intern(code)


def known_reasons(counters: Iterable[CounterKey], datastore_id: str) -> frozenset[str]:
    """Return the reasons a data store's `failures` counters already carry."""
    return frozenset(
        k.reason for k in counters if k.family == FAILURES and k.datastore_id == datastore_id
    )


def capped_reason(code: str | None, known: Collection[str], cap: int = MAX_REASONS) -> str:
    """Return the reason to count a failure under, given the data store's reasons so far."""
    if code is None or code == OTHER:
        return OTHER
    if code in known:
        return code
    # `other` is always allowed and does not take one of the cap's places.
    return code if len(set(known) - {OTHER}) < cap else OTHER


def failure_increments(
    key: ImageSetKey,
    failed: Iterable[Version],
    known: Collection[str],
    cap: int = MAX_REASONS,
) -> dict[CounterKey, int]:
    """Count versions that entered a failure status by data store, status and capped reason.

    Given a diff's `failed` versions and added to the same increments, so `failures` moves
    exactly when `failed_versions` does, in the same transaction, and never on a baseline.
    """
    allowed = set(known)
    counts: Counter[CounterKey] = Counter()
    for version in failed:
        reason = capped_reason(version.reason, allowed, cap)
        allowed.add(reason)
        counts[CounterKey(FAILURES, key.datastore_id, "", version.workflow_status, reason)] += 1
    return dict(counts)


def label_reasons(
    known: Collection[str], candidates: Iterable[str | None], cap: int = MAX_REASONS
) -> frozenset[str]:
    """Return the reasons an info series may show: the counted ones, then others up to the cap.

    Failures seen in a baseline were never counted, so their codes may not be known; they get
    the places left under the cap, in sorted order, so the label stays bounded and stable.
    """
    allowed = set(known) - {OTHER}
    extra = sorted({c for c in candidates if c is not None and c != OTHER} - allowed)
    allowed.update(extra[: max(0, cap - len(allowed))])
    return frozenset(allowed)


def shown_reason(code: str | None, allowed: Collection[str]) -> str:
    """Return a version's reason as a label value: its code if allowed, else `other`."""
    return code if code is not None and code in allowed else OTHER
