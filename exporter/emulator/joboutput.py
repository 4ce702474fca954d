"""What an ended import job leaves under its outputS3Uri, and the S3 writer that puts it there.

Layout from the HealthImaging developer guide ("Understanding import jobs"): the job's output
folder `<outputS3Uri given to StartDICOMImportJob><datastoreId>-DicomImport-<jobId>/` holds
`job-output-manifest.json` (a `jobSummary`), `SUCCESS/success.ndjson` (one line per imported
file) and `FAILURE/failure.ndjson` (one line per file that failed). File names are fake.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any

from .model import ImportJob

log = logging.getLogger("exporter.emulator")

MANIFEST = "job-output-manifest.json"
SUCCESS_FILE = "SUCCESS/success.ndjson"
FAILURE_FILE = "FAILURE/failure.ndjson"
_S3_URI = re.compile(r"s3://(?P<bucket>[^/]+)/?(?P<key>.*)")


def job_output_uri(output_s3_uri: str, datastore_id: str, job_id: str) -> str:
    """The job's own output folder under the prefix the caller gave."""
    prefix = output_s3_uri if output_s3_uri.endswith("/") else output_s3_uri + "/"
    return f"{prefix}{datastore_id}-DicomImport-{job_id}/"


def split_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of an s3:// URI."""
    match = _S3_URI.fullmatch(uri)
    if match is None:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return match["bucket"], match["key"]


def _input_key(job: ImportJob, kind: str, index: int) -> str:
    _, key = split_s3_uri(job.input_s3_uri)
    if key and not key.endswith("/"):
        key += "/"
    return f"{key}emulated-{kind}-{index:05d}.dcm"


def objects(job: ImportJob, image_set_id: str | None) -> dict[str, bytes]:
    """Key (relative to the job's output folder) → body, for an ended job."""
    out = job.output_s3_uri
    failed = job.failed_files + job.server_error_files
    summary: dict[str, Any] = {
        "jobId": job.job_id,
        "datastoreId": job.datastore_id,
        "inputS3Uri": job.input_s3_uri,
        "outputS3Uri": out,
        "successOutputS3Uri": f"{out}SUCCESS/",
        "failureOutputS3Uri": f"{out}FAILURE/",
        "warningsOutputS3Uri": f"{out}WARNING/",
        "numberOfScannedFiles": job.imported_files + failed,
        "numberOfImportedFiles": job.imported_files,
        "numberOfFilesWithCustomerError": job.failed_files,
        "numberOfFilesWithServerError": job.server_error_files,
        "numberOfGeneratedImageSets": 1 if image_set_id is not None else 0,
        "imageSetsSummary": (
            [
                {
                    "imageSetId": image_set_id,
                    "imageSetVersion": 1,
                    "isPrimary": True,
                    "numberOfMatchedSOPInstances": job.imported_files,
                }
            ]
            if image_set_id is not None
            else []
        ),
    }
    success = [
        {
            "inputFile": _input_key(job, "ok", i),
            "importResponse": {"imageSetId": image_set_id, "isPrimary": True},
        }
        for i in range(job.imported_files if image_set_id is not None else 0)
    ]
    failure = [
        {
            "inputFile": _input_key(job, "bad", i),
            "exception": {
                "exceptionType": "ValidationException",
                "message": "DICOM attribute TransferSyntaxUID does not exist",
            },
        }
        for i in range(job.failed_files)
    ] + [
        {
            "inputFile": _input_key(job, "err", i),
            "exception": {
                "exceptionType": "InternalServerException",
                "message": "Internal error while processing the file",
            },
        }
        for i in range(job.server_error_files)
    ]
    return {
        MANIFEST: json.dumps({"jobSummary": summary}, indent=2).encode(),
        SUCCESS_FILE: _ndjson(success),
        FAILURE_FILE: _ndjson(failure),
    }


def _ndjson(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()


class S3Output:
    """Writes job output with the emulator's own boto3 S3 client (path-style addressing)."""

    def __init__(self, endpoint_url: str | None, region: str) -> None:
        """`endpoint_url` is the S3 endpoint (moto's server in tests)."""
        import boto3  # the emulator's own client: it shares no code with exporter.aws
        import botocore.config

        self.endpoint_url = endpoint_url
        self._client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id="emulator",
            aws_secret_access_key="emulator",
            config=botocore.config.Config(s3={"addressing_style": "path"}),
        )
        self._lock = threading.Lock()
        self._counts = {"jobs_written": 0, "write_failed": 0}

    def write(self, job_output_uri: str, bodies: dict[str, bytes]) -> None:
        """Put every object under the job's output folder; one log line if S3 refuses."""
        bucket, prefix = split_s3_uri(job_output_uri)
        try:
            for name, body in bodies.items():
                self._client.put_object(Bucket=bucket, Key=prefix + name, Body=body)
        except Exception as exc:  # a missing bucket must not stop the emulator: count, one line
            with self._lock:
                self._counts["write_failed"] += 1
            log.warning("import job output not written to S3: %s: %s", type(exc).__name__, exc)
            return
        with self._lock:
            self._counts["jobs_written"] += 1

    def counts(self) -> dict[str, int]:
        """Jobs whose output was written, and writes S3 refused."""
        with self._lock:
            return dict(self._counts)
