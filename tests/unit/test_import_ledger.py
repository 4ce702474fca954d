"""The import-job ledger (pure): baseline, newly ended, counted once, restart, reason, window."""

from __future__ import annotations

from exporter.aws.parsing import ImportJob
from exporter.imports.ledger import (
    DURATION_BUCKET,
    DURATION_COUNT,
    DURATION_SUM,
    ENDED,
    FAILURES,
    FILES,
    JOBS_WITH_FAILED_FILES,
    JobChanges,
    JobCounter,
    KnownJob,
    Ledger,
    gauge_counts,
    manifest_increments,
    observe_jobs,
    take_baseline,
)
from exporter.reasons import MAX_REASONS, OTHER

DS = "d" * 32
DAY = 86_400.0
NOW = 1_700_000_000.0
RETENTION = 7 * DAY


def job(
    job_id: str,
    status: str,
    submitted: float | None = None,
    ended: float | None = None,
    reason: str | None = None,
    output: str | None = None,
) -> ImportJob:
    return ImportJob(job_id, status, submitted, ended, reason, output)


def apply(known: dict[str, KnownJob], changes: JobChanges) -> dict[str, KnownJob]:
    """What the store does with changes, in memory."""
    after = {k: v for k, v in known.items() if k not in changes.deletes}
    after.update({j.job_id: j for j in changes.upserts})
    return after


def observe(
    ledger: Ledger,
    known: dict[str, KnownJob],
    seen: list[ImportJob],
    now: float = NOW,
    **kwargs: object,
) -> JobChanges:
    return observe_jobs(ledger, known, seen, now, retention_seconds=RETENTION, **kwargs)  # type: ignore[arg-type]


def test_baseline_counts_nothing_and_keeps_active_and_recent_jobs() -> None:
    listed = [
        job("a", "SUBMITTED", NOW - 10),
        job("b", "IN_PROGRESS", NOW - 100),
        job("c", "FAILED", NOW - DAY, NOW - DAY + 60, reason="X_Y"),
        job("d", "COMPLETED", NOW - 30 * DAY, NOW - 30 * DAY + 60),  # older than the retention
    ]
    changes = take_baseline(DS, listed, NOW, RETENTION)
    assert changes.increments == {}
    assert changes.ended == ()
    assert sorted(j.job_id for j in changes.upserts) == ["a", "b", "c"]
    assert changes.ledger.baseline_at == NOW
    assert changes.ledger.horizon == NOW


def test_a_job_seen_ending_counts_once_with_reason_and_duration() -> None:
    ledger = Ledger(DS, baseline_at=NOW - 600)
    known = {"a": KnownJob("a", "IN_PROGRESS", NOW - 500)}
    ended = job("a", "FAILED", NOW - 500, NOW - 200, reason="INVALID_REQUEST")
    changes = observe(ledger, known, [ended])
    assert changes.increments[JobCounter(DS, ENDED, "FAILED")] == 1
    assert changes.increments[JobCounter(DS, FAILURES, "INVALID_REQUEST")] == 1
    assert changes.increments[JobCounter(DS, DURATION_COUNT, "FAILED")] == 1
    assert changes.increments[JobCounter(DS, DURATION_SUM, "FAILED")] == 300
    assert changes.increments[JobCounter(DS, DURATION_BUCKET, "FAILED|300")] == 1
    assert JobCounter(DS, DURATION_BUCKET, "FAILED|60") not in changes.increments
    # Seen again (the next cycle, a reconciliation, a second read): nothing more.
    again = observe(changes.ledger, apply(known, changes), [ended], NOW + 60)
    assert again.increments == {}
    assert again.ended == ()


def test_a_restart_before_the_commit_counts_the_end_once() -> None:
    """A kill -9 between seeing and persisting: the store still holds the job active."""
    ledger = Ledger(DS, baseline_at=NOW - 600)
    stored = {"a": KnownJob("a", "SUBMITTED", NOW - 500)}
    ended = job("a", "COMPLETED", NOW - 500, NOW - 100)
    lost = observe(ledger, stored, [ended])  # computed, never committed
    assert lost.increments[JobCounter(DS, ENDED, "COMPLETED")] == 1
    after_restart = observe(ledger, stored, [ended], NOW + 30)
    assert after_restart.increments[JobCounter(DS, ENDED, "COMPLETED")] == 1
    committed = apply(stored, after_restart)
    assert observe(after_restart.ledger, committed, [ended], NOW + 60).increments == {}


def test_unknown_ended_jobs_count_only_after_the_horizon() -> None:
    ledger = Ledger(DS, baseline_at=NOW - 3600, pruned_before=NOW - RETENTION)
    before = job("old", "FAILED", NOW - 7200, NOW - 4000, reason="X_Y")
    after = job("fast", "FAILED", NOW - 120, NOW - 60, reason="X_Y")  # between two cycles
    changes = observe(ledger, {}, [before, after], reconciled=True)
    assert [j.job_id for j in changes.ended] == ["fast"]
    assert changes.increments[JobCounter(DS, ENDED, "FAILED")] == 1
    assert {j.job_id for j in changes.upserts} == {"old", "fast"}  # both within the window
    assert changes.ledger.reconciled_at == NOW


def test_a_pruned_job_found_again_is_not_counted_again() -> None:
    ledger = Ledger(DS, baseline_at=NOW - 30 * DAY)
    known = {"a": KnownJob("a", "COMPLETED", NOW - 20 * DAY, NOW - 20 * DAY + 10)}
    pruned = observe(ledger, known, [])
    assert pruned.deletes == ("a",)
    assert pruned.ledger.pruned_before == NOW - RETENTION
    later = observe(
        pruned.ledger,
        apply(known, pruned),
        [job("a", "COMPLETED", NOW - 20 * DAY, NOW - 20 * DAY + 10)],
        NOW + 60,
    )
    assert later.increments == {}


def test_an_active_job_moves_on_and_a_vanished_one_is_dropped() -> None:
    ledger = Ledger(DS, baseline_at=NOW - 600)
    known = {"a": KnownJob("a", "SUBMITTED", NOW - 60), "b": KnownJob("b", "SUBMITTED", NOW - 60)}
    changes = observe(ledger, known, [job("a", "IN_PROGRESS", NOW - 60)], gone=["b"])
    assert changes.upserts == (KnownJob("a", "IN_PROGRESS", NOW - 60),)
    assert changes.deletes == ("b",)
    assert changes.increments == {}


def test_an_ended_sight_wins_over_an_active_one_of_the_same_job() -> None:
    ledger = Ledger(DS, baseline_at=NOW - 600)
    known = {"a": KnownJob("a", "IN_PROGRESS", NOW - 60)}
    seen = [job("a", "COMPLETED", NOW - 60, NOW - 1), job("a", "IN_PROGRESS", NOW - 60)]
    changes = observe(ledger, known, seen)
    assert changes.increments[JobCounter(DS, ENDED, "COMPLETED")] == 1


def test_failure_reasons_are_capped_per_data_store() -> None:
    ledger = Ledger(DS, baseline_at=NOW - 600)
    known_reasons = {f"CODE_{i:02d}" for i in range(MAX_REASONS)}
    seen = [
        job("a", "FAILED", NOW - 60, NOW - 1, reason="NEW_CODE"),
        job("b", "FAILED", NOW - 60, NOW - 1, reason=None),
        job("c", "FAILED", NOW - 60, NOW - 1, reason="CODE_03"),
    ]
    changes = observe(ledger, {}, seen, known_reasons=known_reasons)
    assert changes.increments[JobCounter(DS, FAILURES, OTHER)] == 2
    assert changes.increments[JobCounter(DS, FAILURES, "CODE_03")] == 1
    assert JobCounter(DS, FAILURES, "NEW_CODE") not in changes.increments


def test_read_manifests_marks_newly_ended_jobs_pending_with_their_output() -> None:
    ledger = Ledger(DS, baseline_at=NOW - 600)
    known = {"a": KnownJob("a", "IN_PROGRESS", NOW - 60)}
    output = "s3://bucket/out/x-DicomImport-a/"
    changes = observe(
        ledger,
        known,
        [job("a", "COMPLETED", NOW - 60, NOW - 1, output=output)],
        read_manifests=True,
    )
    (row,) = changes.upserts
    assert row.manifest_pending and row.output_s3_uri == output
    assert (
        observe(ledger, known, [job("a", "COMPLETED", NOW - 60, NOW - 1, output=output)])
        .upserts[0]
        .output_s3_uri
        is None
    )


def test_manifest_counts_and_completed_jobs_with_failed_files() -> None:
    assert manifest_increments(DS, "COMPLETED", 5, 2) == {
        JobCounter(DS, FILES, "imported"): 5,
        JobCounter(DS, FILES, "failed"): 2,
        JobCounter(DS, JOBS_WITH_FAILED_FILES, ""): 1,
    }
    assert JobCounter(DS, JOBS_WITH_FAILED_FILES, "") not in manifest_increments(DS, "FAILED", 0, 3)
    assert JobCounter(DS, JOBS_WITH_FAILED_FILES, "") not in manifest_increments(
        DS, "COMPLETED", 3, 0
    )


def test_gauge_counts_active_jobs_and_ended_ones_in_the_window() -> None:
    jobs = [
        KnownJob("a", "SUBMITTED", NOW - 500),
        KnownJob("b", "SUBMITTED", NOW - 100),
        KnownJob("c", "IN_PROGRESS", NOW - 50),
        KnownJob("d", "COMPLETED", NOW - DAY, NOW - DAY + 5),
        KnownJob("e", "FAILED", NOW - 9 * DAY, NOW - 8 * DAY),  # outside a 7-day window
    ]
    counts, oldest = gauge_counts(jobs, NOW, 7 * DAY)
    assert counts == {"SUBMITTED": 2, "IN_PROGRESS": 1, "COMPLETED": 1, "FAILED": 0}
    assert oldest == {"SUBMITTED": NOW - 500, "IN_PROGRESS": NOW - 50}
    assert gauge_counts([], NOW, DAY) == (
        {"SUBMITTED": 0, "IN_PROGRESS": 0, "COMPLETED": 0, "FAILED": 0},
        {},
    )
