"""Turns records into the JSON shapes of the service model; absent fields stay absent."""

from __future__ import annotations

from typing import Any

from .model import Datastore, ImageSet, ImportJob, Version


def _put(out: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        out[key] = value


def _common(out: dict[str, Any], version: Version) -> dict[str, Any]:
    """Fields ImageSetProperties and GetImageSetResponse share (except the status key)."""
    _put(out, "createdAt", version.created_at)
    _put(out, "updatedAt", version.updated_at)
    _put(out, "deletedAt", version.deleted_at)
    _put(out, "message", version.message)
    if version.forced is not None:
        out["overrides"] = {"forced": version.forced}
    _put(out, "isPrimary", version.is_primary)
    return out


def image_set_properties(image_set_id: str, version: Version) -> dict[str, Any]:
    """ImageSetProperties: note the capital I of ImageSetWorkflowStatus on the wire."""
    out: dict[str, Any] = {
        "imageSetId": image_set_id,
        "versionId": version.version_id,
        "imageSetState": version.state,
    }
    _put(out, "ImageSetWorkflowStatus", version.workflow_status)
    return _common(out, version)


def get_image_set(
    datastore_id: str, image_set_id: str, version: Version, arn: str
) -> dict[str, Any]:
    """GetImageSetResponse: here the model spells it imageSetWorkflowStatus."""
    out: dict[str, Any] = {
        "datastoreId": datastore_id,
        "imageSetId": image_set_id,
        "versionId": version.version_id,
        "imageSetState": version.state,
    }
    _put(out, "imageSetWorkflowStatus", version.workflow_status)
    _common(out, version)
    out["imageSetArn"] = arn
    return out


def image_set_summary(image_set: ImageSet) -> dict[str, Any]:
    """ImageSetsMetadataSummary for SearchImageSets: version is an integer here."""
    latest = image_set.latest
    out: dict[str, Any] = {
        "imageSetId": image_set.image_set_id,
        "version": int(latest.version_id),
        "createdAt": image_set.created_at,
        "updatedAt": image_set.updated_at,
    }
    _put(out, "isPrimary", latest.is_primary)
    out["DICOMTags"] = dict(image_set.dicom_tags)
    return out


def datastore_properties(store: Datastore, arn: str) -> dict[str, Any]:
    """DatastoreProperties, whose members also cover DatastoreSummary."""
    return {
        "datastoreId": store.datastore_id,
        "datastoreName": store.name,
        "datastoreStatus": store.status,
        "datastoreArn": arn,
        "createdAt": store.created_at,
        "updatedAt": store.updated_at,
    }


def import_job_summary(job: ImportJob) -> dict[str, Any]:
    """DICOMImportJobSummary: no S3 URIs here, unlike the job's properties."""
    out: dict[str, Any] = {
        "jobId": job.job_id,
        "jobName": job.job_name,
        "jobStatus": job.status,
        "datastoreId": job.datastore_id,
        "dataAccessRoleArn": job.data_access_role_arn,
    }
    _put(out, "endedAt", job.ended_at)
    out["submittedAt"] = job.submitted_at
    _put(out, "message", job.message)
    return out


def import_job_properties(job: ImportJob) -> dict[str, Any]:
    """DICOMImportJobProperties; outputS3Uri is the job's own folder, as AWS reports it."""
    out = import_job_summary(job)
    out["inputS3Uri"] = job.input_s3_uri
    out["outputS3Uri"] = job.output_s3_uri
    if job.import_configuration is not None:
        out["importConfiguration"] = job.import_configuration
    return out
