"""The emulator's in-memory state and its Python control API; one lock guards everything."""

from __future__ import annotations

import dataclasses
import os
import random
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from . import dataset, events, joboutput, synthetic
from .errors import (
    AccessDeniedError,
    ConflictError,
    DatasetError,
    NotFoundError,
    ValidationError,
)
from .events import EventPublisher, EventSettings, RecordedEvent
from .faults import Faults, FaultState
from .joboutput import S3Output
from .model import (
    DATASTORE_STATUSES,
    ID_PATTERN,
    IMAGE_SET_STATES,
    JOB_ENDED,
    WORKFLOW_STATUSES,
    Datastore,
    ImageSet,
    ImportJob,
    Version,
)
from .outbox import Outbox
from .tokens import TokenCodec

_ID_RE = re.compile(ID_PATTERN)


def check_id(value: str, name: str) -> str:
    """ValidationException unless `value` is 32 characters of [0-9a-z], worded like AWS."""
    if not _ID_RE.fullmatch(value):
        raise ValidationError(
            f"1 validation error detected: Value '{value}' at '{name}' failed to satisfy "
            f"constraint: Member must satisfy regular expression pattern: {ID_PATTERN}"
        )
    return value


def check_enum(value: str, allowed: tuple[str, ...], name: str) -> str:
    """ValidationException unless `value` is one of the model's enum values."""
    if value not in allowed:
        raise ValidationError(
            f"1 validation error detected: Value '{value}' at '{name}' failed to satisfy "
            f"constraint: Member must satisfy enum value set: [{', '.join(allowed)}]"
        )
    return value


class Backend:
    """Datastores, image sets, faults and request counters behind one re-entrant lock."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        region: str = "us-east-1",
        account_id: str = "123456789012",
        token_secret: bytes | None = None,
    ) -> None:
        """Start empty; `clock` stamps createdAt/updatedAt, `monotonic` drives quotas."""
        self.lock = threading.RLock()
        self.clock = clock
        self.region = region
        self.account_id = account_id
        self.tokens = TokenCodec(token_secret)
        self._monotonic = monotonic
        self._stores: dict[str, Datastore] = {}
        self._fault_state = FaultState(Faults(), monotonic)
        self._counts: Counter[str] = Counter()
        # Import jobs and datastores with changes still to come on the clock: advance() visits
        # only these, so a history of thousands of ended jobs costs nothing per tick.
        self._active_jobs: dict[tuple[str, str], ImportJob] = {}
        self._pending_stores: set[str] = set()
        self._job_timing = (1.0, 5.0)
        self._datastore_timing = (1.0, 1.0)
        self._publisher = EventPublisher(EventSettings(), region)
        self._s3: S3Output | None = None
        self._outbox: Outbox | None = None

    def _now(self) -> float:
        # AWS reports milliseconds; rounding keeps wire values comparable with its examples.
        return round(self.clock(), 3)

    # -- datastores and image sets -------------------------------------------------------

    def create_datastore(
        self, datastore_id: str | None = None, name: str = "datastore", status: str = "ACTIVE"
    ) -> str:
        """Add an empty datastore and return its id (random unless given)."""
        ds_id = check_id(datastore_id or secrets.token_hex(16), "datastoreId")
        check_enum(status, DATASTORE_STATUSES, "datastoreStatus")
        with self.lock:
            if ds_id in self._stores:
                raise ConflictError(f"Datastore {ds_id} already exists")
            now = self._now()
            store = self._stores[ds_id] = Datastore(ds_id, name, status, now, now)
            self._datastore_event(store, now)
        return ds_id

    def create_image_set(
        self,
        datastore_id: str,
        image_set_id: str | None = None,
        workflow_status: str = "IMPORTED",
        dicom_tags: dict[str, Any] | None = None,
    ) -> str:
        """Add an image set with version 1 and return its id (random unless given)."""
        set_id = check_id(image_set_id or secrets.token_hex(16), "imageSetId")
        check_enum(workflow_status, WORKFLOW_STATUSES, "workflowStatus")
        try:
            tags = dataset.dicom_tags(dicom_tags or {}, "DICOMTags")
        except DatasetError as exc:
            raise ValidationError(str(exc)) from None
        with self.lock:
            store = self.store(datastore_id)
            if set_id in store.image_sets:
                raise ConflictError(f"Image set {set_id} already exists")
            now = self._now()
            first = Version("1", "ACTIVE", workflow_status, now, is_primary=True)
            store.put([ImageSet(set_id, [first], tags, now, now)])
            self._image_set_event(store, set_id, first, now)
        return set_id

    def add_version(
        self,
        datastore_id: str,
        image_set_id: str,
        workflow_status: str = "UPDATED",
        *,
        forced: bool = False,
        message: str | None = None,
        state: str = "ACTIVE",
        updated_at: float | None = None,
        source_image_set_arn: str | None = None,
    ) -> str:
        """Append a new latest version (updatedAt now, or as given) and return its version id.

        `source_image_set_arn` goes into the COPYING event (default: this image set's ARN).
        """
        check_enum(workflow_status, WORKFLOW_STATUSES, "workflowStatus")
        check_enum(state, IMAGE_SET_STATES, "state")
        with self.lock:
            store = self.store(datastore_id)
            image_set = self.image_set(store, image_set_id)
            now = self._now()
            latest = image_set.latest
            version = Version(
                version_id=str(int(latest.version_id) + 1),
                state=state,
                workflow_status=workflow_status,
                created_at=image_set.created_at,
                updated_at=now if updated_at is None else round(updated_at, 3),
                deleted_at=now if state == "DELETED" else None,
                message=message,
                forced=True if forced else None,
                is_primary=latest.is_primary,
            )
            image_set.versions.append(version)
            store.reindex_updated(image_set, now)
            self._image_set_event(store, image_set_id, version, now, source_image_set_arn)
        return version.version_id

    def set_workflow_status(
        self,
        datastore_id: str,
        image_set_id: str,
        version_id: str,
        workflow_status: str,
        message: str | None = None,
        updated_at: float | None = None,
        *,
        state: str | None = None,
        source_image_set_arn: str | None = None,
    ) -> None:
        """Change one version's workflow status, message (and state); bumps updatedAt.

        `updated_at` back-dates the version's updatedAt (a workflow that started earlier); the
        image set's updatedAt, which search sorts on, is now all the same.
        """
        check_enum(workflow_status, WORKFLOW_STATUSES, "workflowStatus")
        if state is not None:
            check_enum(state, IMAGE_SET_STATES, "state")
        with self.lock:
            store = self.store(datastore_id)
            image_set = self.image_set(store, image_set_id)
            index = next(
                (i for i, v in enumerate(image_set.versions) if v.version_id == version_id), None
            )
            if index is None:
                raise NotFoundError(f"Image set version {version_id} not found")
            version = image_set.versions[index]
            now = self._now()
            changed = image_set.versions[index] = dataclasses.replace(
                version,
                workflow_status=workflow_status,
                message=message,
                updated_at=now if updated_at is None else round(updated_at, 3),
                state=state if state is not None else version.state,
            )
            store.reindex_updated(image_set, now)
            self._image_set_event(store, image_set_id, changed, now, source_image_set_arn)

    def delete_image_set(self, datastore_id: str, image_set_id: str) -> None:
        """Remove an image set entirely: later calls for it get ResourceNotFoundException."""
        with self.lock:
            store = self.store(datastore_id)
            latest = self.image_set(store, image_set_id).latest
            store.drop(image_set_id)
            gone = dataclasses.replace(latest, state="DELETED", workflow_status="DELETED")
            self._image_set_event(store, image_set_id, gone, self._now())

    def generate(self, datastore_id: str, count: int, *, seed: int = 0) -> list[str]:
        """Add `count` synthetic image sets (deterministic per seed) and return their ids."""
        if count < 0:
            raise ValidationError(f"count must be >= 0, got {count}")
        with self.lock:
            store = self.store(datastore_id)
            image_sets = synthetic.generate(
                count,
                seed=seed,
                now=self._now(),
                taken=store.image_sets,
                start=len(store.image_sets),
            )
            store.put(image_sets)
        return [s.image_set_id for s in image_sets]

    def load_dataset(self, source: str | os.PathLike[str] | Mapping[str, Any]) -> None:
        """Replace all data with a YAML/JSON dataset file or parsed dict (DatasetError if bad)."""
        stores = dataset.build(dataset.read_source(source), self._now())
        with self.lock:
            self._stores = {s.datastore_id: s for s in stores}
            self._active_jobs.clear()
            self._pending_stores.clear()

    # -- faults and counters --------------------------------------------------------------

    def set_faults(self, faults: Faults) -> None:
        """Replace the fault settings; restarts the random stream, quotas and malformed count."""
        with self.lock:
            self._fault_state = FaultState(faults, self._monotonic)

    @property
    def faults(self) -> Faults:
        """The current fault settings (malformed_responses counts down as they are sent)."""
        with self.lock:
            return self._fault_state.faults

    def request_counts(self) -> dict[str, int]:
        """Data-plane requests received per operation, refused and throttled ones included."""
        with self.lock:
            return dict(self._counts)

    def reset_request_counts(self) -> None:
        """Zero the request counters."""
        with self.lock:
            self._counts.clear()

    # -- used by the request handlers ------------------------------------------------------

    def record_request(self, operation: str) -> None:
        """Count one data-plane request."""
        with self.lock:
            self._counts[operation] += 1

    def latency(self) -> float:
        """Injected latency to sleep (outside the lock) before answering."""
        with self.lock:
            return self._fault_state.latency_seconds

    def admit(self, operation: str, datastore_id: str | None) -> None:
        """Raise the injected throttle/error/access-denied failure for this request, if any."""
        with self.lock:
            self._fault_state.admit(operation)
            if datastore_id is not None and self._fault_state.denies(datastore_id):
                raise AccessDeniedError(
                    f"User is not authorized to perform this action on datastore {datastore_id}"
                )

    def take_malformed(self) -> bool:
        """Whether the next successful data-plane response is to be sent truncated."""
        with self.lock:
            return self._fault_state.take_malformed()

    def store(self, datastore_id: str) -> Datastore:
        """The datastore (caller holds the lock); ResourceNotFoundException if absent."""
        store = self._stores.get(datastore_id)
        if store is None:
            raise NotFoundError(f"Datastore {datastore_id} not found")
        return store

    def image_set(self, store: Datastore, image_set_id: str) -> ImageSet:
        """The image set (caller holds the lock); ResourceNotFoundException if absent."""
        image_set = store.image_sets.get(image_set_id)
        if image_set is None:
            raise NotFoundError(f"Image set {image_set_id} not found")
        return image_set

    def datastores(self) -> list[Datastore]:
        """All datastores sorted by id (caller holds the lock)."""
        return [self._stores[k] for k in sorted(self._stores)]

    def datastore_arn(self, datastore_id: str) -> str:
        """The datastore's ARN in this emulator's region and account."""
        return f"arn:aws:medical-imaging:{self.region}:{self.account_id}:datastore/{datastore_id}"

    # -- datastore lifecycle -----------------------------------------------------------------

    def set_datastore_status(self, datastore_id: str, status: str) -> None:
        """Move a datastore to `status` now (cancels changes still scheduled for it)."""
        check_enum(status, DATASTORE_STATUSES, "datastoreStatus")
        with self.lock:
            store = self.store(datastore_id)
            store.pending_statuses.clear()
            self._pending_stores.discard(datastore_id)
            self._change_datastore_status(store, status, self._now())

    def schedule_datastore_status(self, datastore_id: str, status: str, after: float) -> None:
        """Move a datastore to `status` `after` seconds from now on the emulator's clock."""
        check_enum(status, DATASTORE_STATUSES, "datastoreStatus")
        if after < 0:
            raise ValidationError(f"after must be >= 0, got {after}")
        with self.lock:
            self._schedule(self.store(datastore_id), status, after)
        self.advance()

    def _schedule(self, store: Datastore, status: str, after: float) -> None:
        store.pending_statuses.append((self._now() + after, status))
        store.pending_statuses.sort()
        self._pending_stores.add(store.datastore_id)

    def set_datastore_timing(self, creating_seconds: float, deleting_seconds: float) -> None:
        """How long CreateDatastore stays CREATING and DeleteDatastore stays DELETING."""
        if creating_seconds < 0 or deleting_seconds < 0:
            raise ValidationError("datastore durations must be >= 0")
        with self.lock:
            self._datastore_timing = (creating_seconds, deleting_seconds)

    def create_datastore_async(self, name: str = "datastore") -> str:
        """CreateDatastore: a new datastore in CREATING that turns ACTIVE on the clock."""
        ds_id = self.create_datastore(None, name, "CREATING")
        with self.lock:
            # Not advanced here: the answer says CREATING even when the change is due at once.
            self._schedule(self.store(ds_id), "ACTIVE", self._datastore_timing[0])
        return ds_id

    def delete_datastore_async(self, datastore_id: str) -> str:
        """DeleteDatastore: DELETING now, DELETED on the clock; returns the new status."""
        with self.lock:
            store = self.store(datastore_id)
            if store.status not in ("ACTIVE", "CREATE_FAILED"):
                raise ConflictError(f"Datastore {datastore_id} is {store.status}")
            if store.image_sets:
                raise ConflictError(
                    f"Datastore {datastore_id} still has image sets; delete them first"
                )
            self.set_datastore_status(datastore_id, "DELETING")
            self._schedule(store, "DELETED", self._datastore_timing[1])
            return store.status

    def _change_datastore_status(self, store: Datastore, status: str, at: float) -> None:
        store.status = status
        store.updated_at = at
        self._datastore_event(store, at)

    # -- import jobs -------------------------------------------------------------------------

    def timing(self) -> dict[str, float]:
        """How long import jobs and datastores stay in their transitional statuses."""
        with self.lock:
            return {
                "import_job_submitted_seconds": self._job_timing[0],
                "import_job_in_progress_seconds": self._job_timing[1],
                "datastore_creating_seconds": self._datastore_timing[0],
                "datastore_deleting_seconds": self._datastore_timing[1],
            }

    def set_import_job_timing(self, submitted_seconds: float, in_progress_seconds: float) -> None:
        """Default time new import jobs spend SUBMITTED, then IN_PROGRESS (emulator clock)."""
        if submitted_seconds < 0 or in_progress_seconds < 0:
            raise ValidationError("import job durations must be >= 0")
        with self.lock:
            self._job_timing = (submitted_seconds, in_progress_seconds)

    def start_import_job(
        self,
        datastore_id: str,
        *,
        input_s3_uri: str = "s3://emulator-input/dicom/",
        output_s3_uri: str = "s3://emulator-output/import/",
        data_access_role_arn: str = "arn:aws:iam::123456789012:role/ImportJobDataAccessRole",
        job_name: str | None = None,
        client_token: str | None = None,
        import_configuration: dict[str, Any] | None = None,
        status: str = "COMPLETED",
        message: str | None = None,
        imported_files: int = 1,
        failed_files: int = 0,
        server_error_files: int = 0,
        submitted_seconds: float | None = None,
        in_progress_seconds: float | None = None,
    ) -> str:
        """A new SUBMITTED job (StartDICOMImportJob) and how it will end; returns its jobId.

        It turns IN_PROGRESS after `submitted_seconds` and ends `in_progress_seconds` later
        (defaults: set_import_job_timing) as `status`, COMPLETED or FAILED, with `message`,
        and with these file counts in its S3 output. A repeated `client_token` returns the
        job it first started.
        """
        self._check_plan(status, imported_files, failed_files, server_error_files)
        with self.lock:
            store = self.store(datastore_id)
            if store.status != "ACTIVE":
                raise ConflictError(f"Datastore {datastore_id} is {store.status}, not ACTIVE")
            if client_token is not None:
                for job in store.import_jobs.values():
                    if job.client_token == client_token:
                        return job.job_id
            job_id = secrets.token_hex(16)
            now = self._now()
            wait = self._job_timing[0] if submitted_seconds is None else submitted_seconds
            run = self._job_timing[1] if in_progress_seconds is None else in_progress_seconds
            if wait < 0 or run < 0:
                raise ValidationError("import job durations must be >= 0")
            job = ImportJob(
                job_id=job_id,
                job_name=job_name or f"emulated-import-{job_id[:8]}",
                datastore_id=datastore_id,
                data_access_role_arn=data_access_role_arn,
                input_s3_uri=input_s3_uri,
                output_s3_uri=joboutput.job_output_uri(output_s3_uri, datastore_id, job_id),
                submitted_at=now,
                starts_at=now + wait,
                ends_at=now + wait + run,
                client_token=client_token,
                import_configuration=import_configuration,
                plan_status=status,
                plan_message=message,
                imported_files=imported_files,
                failed_files=failed_files,
                server_error_files=server_error_files,
            )
            store.import_jobs[job_id] = job
            self._active_jobs[(datastore_id, job_id)] = job
            self._job_event(job, now)
        return job_id

    def set_import_job_outcome(
        self,
        datastore_id: str,
        job_id: str,
        status: str,
        *,
        message: str | None = None,
        imported_files: int | None = None,
        failed_files: int = 0,
        server_error_files: int = 0,
        now: bool = False,
    ) -> None:
        """Decide how a job that has not ended yet will end; `now=True` ends it at once.

        FAILED takes a `message` (a default one otherwise); COMPLETED with `failed_files` is
        the case AWS reports only in the job's output manifests.
        """
        with self.lock:
            job = self.import_job(self.store(datastore_id), job_id)
            if job.ended:
                raise ConflictError(f"Import job {job_id} already ended as {job.status}")
            self._check_plan(
                status,
                job.imported_files if imported_files is None else imported_files,
                failed_files,
                server_error_files,
            )
            job.plan_status = status
            job.plan_message = message
            if imported_files is not None:
                job.imported_files = imported_files
            job.failed_files = failed_files
            job.server_error_files = server_error_files
            if now:
                at = self._now()
                job.starts_at = min(job.starts_at, at)
                job.ends_at = at
        self.advance()

    def generate_import_jobs(
        self,
        datastore_id: str,
        count: int,
        *,
        seed: int = 0,
        spread_seconds: float = 7 * 86_400.0,
        failed_ratio: float = 0.05,
        active: int = 0,
    ) -> list[str]:
        """`count` ended jobs and `active` running ones; returns all their jobIds.

        The ended ones were submitted within `spread_seconds` before now (deterministic per
        seed, `failed_ratio` of them FAILED) and are history: no events, no S3 output. The
        active ones are started as start_import_job does and run on the clock.
        """
        if count < 0 or active < 0:
            raise ValidationError("count and active must be >= 0")
        if not 0.0 <= failed_ratio <= 1.0:
            raise ValidationError("failed_ratio must be between 0 and 1")
        rng = random.Random(seed)
        with self.lock:
            store = self.store(datastore_id)
            now = self._now()
            ids: list[str] = []
            for i in range(count):
                job_id = f"{rng.getrandbits(128):032x}"
                while job_id in store.import_jobs:
                    job_id = f"{rng.getrandbits(128):032x}"
                submitted = round(now - spread_seconds * rng.random(), 3)
                ended = round(min(now, submitted + rng.uniform(30.0, 1800.0)), 3)
                failed = rng.random() < failed_ratio
                store.import_jobs[job_id] = ImportJob(
                    job_id=job_id,
                    job_name=f"generated-import-{i:05d}",
                    datastore_id=datastore_id,
                    data_access_role_arn="arn:aws:iam::123456789012:role/ImportJobDataAccessRole",
                    input_s3_uri=f"s3://emulator-input/generated/{i:05d}/",
                    output_s3_uri=joboutput.job_output_uri(
                        "s3://emulator-output/generated/", datastore_id, job_id
                    ),
                    submitted_at=submitted,
                    starts_at=submitted,
                    ends_at=ended,
                    status="FAILED" if failed else "COMPLETED",
                    ended_at=ended,
                    message=_DEFAULT_FAILURE if failed else None,
                    plan_status="FAILED" if failed else "COMPLETED",
                )
                ids.append(job_id)
        ids.extend(
            self.start_import_job(datastore_id, job_name=f"generated-active-{i:05d}")
            for i in range(active)
        )
        return ids

    @staticmethod
    def _check_plan(status: str, imported: int, failed: int, server_errors: int) -> None:
        check_enum(status, tuple(sorted(JOB_ENDED)), "status")
        if min(imported, failed, server_errors) < 0:
            raise ValidationError("file counts must be >= 0")

    def import_job(self, store: Datastore, job_id: str) -> ImportJob:
        """The import job (caller holds the lock); ResourceNotFoundException if absent."""
        job = store.import_jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"Import job {job_id} not found")
        return job

    # -- the clock ---------------------------------------------------------------------------

    def advance(self) -> None:
        """Apply every job and datastore change whose time has come on the emulator's clock.

        Request handlers call it before reading jobs or datastores, and the server calls it a
        few times a second so events and S3 output appear on time without any reader.
        """
        with self.lock:
            if not self._active_jobs and not self._pending_stores:
                return
            now = self._now()
            for key, job in list(self._active_jobs.items()):
                if job.status == "SUBMITTED" and now >= job.starts_at:
                    job.status = "IN_PROGRESS"
                    self._job_event(job, job.starts_at)
                if job.status == "IN_PROGRESS" and now >= job.ends_at:
                    self._end_job(job)
                    del self._active_jobs[key]
            for ds_id in list(self._pending_stores):
                store = self._stores.get(ds_id)
                if store is None:
                    self._pending_stores.discard(ds_id)
                    continue
                while store.pending_statuses and store.pending_statuses[0][0] <= now:
                    at, status = store.pending_statuses.pop(0)
                    self._change_datastore_status(store, status, at)
                if not store.pending_statuses:
                    self._pending_stores.discard(ds_id)

    def _end_job(self, job: ImportJob) -> None:
        job.status = job.plan_status
        job.ended_at = job.ends_at
        job.message = (job.plan_message or _DEFAULT_FAILURE) if job.status == "FAILED" else None
        image_set_id = None
        store = self._stores.get(job.datastore_id)
        if (
            job.status == "COMPLETED"
            and job.imported_files > 0
            and store is not None
            and store.status == "ACTIVE"
        ):
            # The imported files become one image set, as an import of one series does.
            image_set_id = secrets.token_hex(16)
            first = Version("1", "ACTIVE", "IMPORTED", job.ends_at, is_primary=True)
            store.put([ImageSet(image_set_id, [first], {}, job.ends_at, job.ends_at)])
        self._job_event(job, job.ends_at)
        if self._s3 is not None:
            s3, bodies = self._s3, joboutput.objects(job, image_set_id)
            self._outbox_put(0.0, lambda: s3.write(job.output_s3_uri, bodies))

    # -- events and S3 output ----------------------------------------------------------------

    def configure_events(self, settings: EventSettings) -> None:
        """Publish events per `settings` from now on (drop stream restarts from its seed)."""
        publisher = EventPublisher(settings, self.region)
        with self.lock:
            self._publisher = publisher

    @property
    def event_settings(self) -> EventSettings:
        """The current event settings."""
        with self.lock:
            return self._publisher.settings

    def recorded_events(self) -> list[RecordedEvent]:
        """The last 10,000 events published since configure_events, dropped ones marked."""
        with self.lock:
            publisher = self._publisher
        return publisher.recorded()

    def event_counts(self) -> dict[str, int]:
        """Events published, dropped, sent to SQS, and failed sends since configure_events."""
        with self.lock:
            publisher = self._publisher
        return publisher.counts()

    def configure_s3_output(self, endpoint_url: str | None) -> None:
        """Write ended jobs' output to S3 at `endpoint_url` from now on; None stops writing."""
        s3 = S3Output(endpoint_url, self.region) if endpoint_url is not None else None
        with self.lock:
            self._s3 = s3

    def s3_output_counts(self) -> dict[str, int]:
        """Jobs whose output was written to S3, and writes S3 refused."""
        with self.lock:
            s3 = self._s3
        return s3.counts() if s3 is not None else {"jobs_written": 0, "write_failed": 0}

    @property
    def s3_endpoint_url(self) -> str | None:
        """Where job output is written, or None."""
        with self.lock:
            return self._s3.endpoint_url if self._s3 is not None else None

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until queued SQS sends and S3 writes (delayed ones too) are done."""
        with self.lock:
            outbox = self._outbox
        return outbox.flush(timeout) if outbox is not None else True

    def close(self) -> None:
        """Stop the background sender thread (undelivered messages are dropped); idempotent."""
        with self.lock:
            outbox, self._outbox = self._outbox, None
        if outbox is not None:
            outbox.close()

    def _outbox_put(self, delay: float, action: Callable[[], None]) -> None:
        # Caller holds the lock; the thread starts on first use and after close().
        if self._outbox is None:
            self._outbox = Outbox("healthimaging-emulator-outbox")
        self._outbox.put(delay, action)

    def _publish(self, event: dict[str, Any]) -> None:
        body = self._publisher.publish(event)
        if body is not None:
            publisher = self._publisher
            self._outbox_put(publisher.settings.delay_seconds, lambda: publisher.send(body))

    def _datastore_event(self, store: Datastore, at: float) -> None:
        self._publish(
            events.envelope(
                events.DATASTORE_DETAIL_TYPES[store.status],
                account=self.account_id,
                region=self.region,
                at=at,
                resources=[self.datastore_arn(store.datastore_id)],
                detail={
                    "imagingVersion": events.IMAGING_VERSION,
                    "datastoreId": store.datastore_id,
                    "datastoreName": store.name,
                    "datastoreStatus": store.status,
                },
            )
        )

    def _job_event(self, job: ImportJob, at: float) -> None:
        self._publish(
            events.envelope(
                events.IMPORT_JOB_DETAIL_TYPES[job.status],
                account=self.account_id,
                region=self.region,
                at=at,
                resources=[self.datastore_arn(job.datastore_id)],
                detail={
                    "imagingVersion": events.IMAGING_VERSION,
                    "datastoreId": job.datastore_id,
                    "jobId": job.job_id,
                    "jobName": job.job_name,
                    "jobStatus": job.status,
                    "inputS3Uri": job.input_s3_uri,
                    "outputS3Uri": job.output_s3_uri,
                },
            )
        )

    def _image_set_event(
        self,
        store: Datastore,
        image_set_id: str,
        version: Version,
        at: float,
        source_image_set_arn: str | None = None,
    ) -> None:
        detail_type = events.IMAGE_SET_DETAIL_TYPES.get(version.workflow_status or "")
        if detail_type is None:
            return  # AWS has no event for this status
        arn = f"{self.datastore_arn(store.datastore_id)}/imageset/{image_set_id}"
        detail: dict[str, Any] = {
            "imagingVersion": events.IMAGING_VERSION,
            "isPrimary": version.is_primary is not False,
            "imageSetVersion": version.version_id,
            "datastoreId": store.datastore_id,
            "imagesetId": image_set_id,
            "imageSetState": version.state,
            "imageSetWorkflowStatus": version.workflow_status,
        }
        if version.workflow_status == "COPYING":
            detail["sourceImageSetArn"] = source_image_set_arn or arn
        self._publish(
            events.envelope(
                detail_type,
                account=self.account_id,
                region=self.region,
                at=at,
                resources=[arn],
                detail=detail,
            )
        )


_DEFAULT_FAILURE = "INTERNAL_ERROR: the import job could not read its input"
