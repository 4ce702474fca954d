"""Import job output in S3: the file counts of a job's `job-output-manifest.json`, and nothing else.

A job's output names the files it imported or refused (they can name patients): only counts
leave this module. The manifest's `jobSummary` carries them (numberOfImportedFiles,
numberOfFilesWithCustomerError, numberOfFilesWithServerError); only when a count is missing are
the records (`SUCCESS/success.ndjson`, `FAILURE/failure.ndjson`) read, and then only their lines
are counted. Every read is bounded in bytes; whatever goes wrong is an ApiError whose outcome is
the `reason` of healthimaging_exporter_manifest_read_errors_total.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import botocore.exceptions

from exporter.aws.errors import ApiError, classify_error_code, malformed, shown
from exporter.outcomes import Outcome

MANIFEST = "job-output-manifest.json"
SUCCESS_RECORDS = "SUCCESS/success.ndjson"
FAILURE_RECORDS = "FAILURE/failure.ndjson"
# A manifest lists the job's image sets too: 8 MiB holds tens of thousands of them.
MAX_MANIFEST_BYTES = 8 << 20
# Records are one line per file; beyond this the job is too big to count by lines.
MAX_RECORD_BYTES = 256 << 20
_CHUNK = 1 << 20
_S3_URI = re.compile(r"s3://(?P<bucket>[a-z0-9][.\-a-z0-9]{1,61}[a-z0-9])(?:/(?P<prefix>.*))?")


@dataclass(frozen=True, slots=True)
class ManifestCounts:
    """How many files a job imported and how many it could not (customer or server errors)."""

    imported: int
    failed: int


def split_s3_uri(uri: str) -> tuple[str, str]:
    """Return the bucket and the key prefix (ending in / unless empty) of an s3:// folder."""
    match = _S3_URI.fullmatch(uri)
    if match is None:
        raise ApiError(Outcome.VALIDATION_ERROR, "outputS3Uri is not an s3:// URI")
    prefix = match["prefix"] or ""
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return match["bucket"], prefix


def counts_from_manifest(data: object) -> tuple[int | None, int | None]:
    """Return (imported, failed) from a parsed manifest; None where the manifest lacks it."""
    if not isinstance(data, Mapping):
        raise malformed(f"{MANIFEST} is not a JSON object")
    summary = data.get("jobSummary")
    if not isinstance(summary, Mapping):
        raise malformed(f"{MANIFEST}: jobSummary is not an object")
    imported = _count(summary, "numberOfImportedFiles")
    customer = _count(summary, "numberOfFilesWithCustomerError")
    server = _count(summary, "numberOfFilesWithServerError")
    failed = None if customer is None and server is None else (customer or 0) + (server or 0)
    return imported, failed


def _count(summary: Mapping[str, Any], name: str) -> int | None:
    value = summary.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 10**12:
        raise malformed(f"{MANIFEST}: {name} is not a file count: {shown(value)}")
    return value


@contextmanager
def _s3_call(what: str) -> Iterator[None]:
    """Turn whatever botocore raises for one S3 call into an ApiError with a one-line message."""
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        response = exc.response if isinstance(exc.response, Mapping) else {}
        error = response.get("Error") or {}
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        code = str(error.get("Code") or "Unknown")
        if code in ("NoSuchKey", "NoSuchBucket"):
            raise ApiError(Outcome.NOT_FOUND, f"{what}: {code}") from None
        outcome = classify_error_code(code, status if isinstance(status, int) else None)
        raise ApiError(outcome, f"{what}: {shown(code, 80)}") from None
    except botocore.exceptions.NoCredentialsError:
        raise ApiError(Outcome.ACCESS_DENIED, f"{what}: no AWS credentials found") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise ApiError(Outcome.NETWORK_ERROR, f"{what}: {type(exc).__name__}") from None


class ManifestReader:
    """Reads the file counts of import jobs' output with one boto3 S3 client (GetObject only)."""

    def __init__(
        self,
        client: Any,
        max_manifest_bytes: int = MAX_MANIFEST_BYTES,
        max_record_bytes: int = MAX_RECORD_BYTES,
    ) -> None:
        self._client = client
        self._max_manifest_bytes = max_manifest_bytes
        self._max_record_bytes = max_record_bytes

    def read_counts(self, output_s3_uri: str) -> ManifestCounts:
        """Return a job's imported and failed file counts; raise ApiError if unreadable."""
        bucket, prefix = split_s3_uri(output_s3_uri)
        body = self._read(bucket, prefix + MANIFEST, self._max_manifest_bytes)
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            raise malformed(f"{MANIFEST} is not JSON") from None
        imported, failed = counts_from_manifest(data)
        if imported is None:
            imported = self._count_lines(bucket, prefix + SUCCESS_RECORDS)
        if failed is None:
            failed = self._count_lines(bucket, prefix + FAILURE_RECORDS)
        return ManifestCounts(imported, failed)

    def _read(self, bucket: str, key: str, limit: int) -> bytes:
        what = f"GetObject {key.rsplit('/', 2)[-1]}"
        with _s3_call(what):
            answer = self._client.get_object(Bucket=bucket, Key=key)
            stream = answer["Body"]
            try:
                data = stream.read(limit + 1)
            finally:
                stream.close()
        if not isinstance(data, bytes):
            raise malformed(f"{what}: the body is not bytes")
        if len(data) > limit:
            raise malformed(f"{what}: more than {limit} bytes; not read")
        return data

    def _count_lines(self, bucket: str, key: str) -> int:
        """Count the records (lines) of a record file without keeping any of them."""
        what = f"GetObject {key.rsplit('/', 2)[-1]}"
        lines = 0
        read = 0
        last = b"\n"
        with _s3_call(what):
            answer = self._client.get_object(Bucket=bucket, Key=key)
            stream = answer["Body"]
            try:
                while chunk := stream.read(_CHUNK):
                    read += len(chunk)
                    if read > self._max_record_bytes:
                        raise malformed(f"{what}: more than {self._max_record_bytes} bytes")
                    lines += chunk.count(b"\n")
                    last = chunk[-1:]
            finally:
                stream.close()
        return lines + (last != b"\n")  # a last record without its line break
