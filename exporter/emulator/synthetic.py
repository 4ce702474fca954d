"""Deterministic synthetic image sets with plausible version histories and fake DICOM tags."""

from __future__ import annotations

import random
from collections.abc import Container

from .model import ImageSet, Version

_DAY = 86_400.0
# Version counts 1..10, skewed to short histories the way real archives are.
_VERSION_COUNTS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
_VERSION_WEIGHTS = (35, 20, 14, 10, 7, 5, 3, 3, 2, 1)
_FIRST_STATUS = ("IMPORTED", "COPIED", "IMPORT_FAILED")
_FIRST_WEIGHTS = (80, 17, 3)
_LATER_STATUS = ("UPDATED", "COPIED", "UPDATE_FAILED", "COPY_FAILED")
_LATER_WEIGHTS = (70, 25, 3, 2)
_FAILURE_MESSAGES = {
    "IMPORT_FAILED": "INVALID_REQUEST: DICOM instance could not be parsed.",
    "UPDATE_FAILED": "INVALID_REQUEST: Patient level metadata mismatch.",
    "COPY_FAILED": (
        "INVALID_REQUEST:  Series of SourceImageSet and DestinationImageSet don't match."
    ),
}
_MODALITIES = ("CT", "MR", "CR", "US", "DX", "MG", "PT", "NM")
_BODY_PARTS = ("HEAD", "CHEST", "ABDOMEN", "PELVIS", "KNEE", "SPINE", "HAND", "BREAST")
_FIRST_NAMES = ("ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE", "TEN")
_FORCED_RATIO = 0.03
_HISTORY_SPAN = 30 * _DAY


def generate(
    count: int, *, seed: int, now: float, taken: Container[str], start: int = 0
) -> list[ImageSet]:
    """`count` image sets created within 30 days before `now`, ids avoiding `taken`."""
    rng = random.Random(seed)
    rand = rng.random
    choices = rng.choices
    out: list[ImageSet] = []
    new_ids: set[str] = set()
    counts = choices(_VERSION_COUNTS, _VERSION_WEIGHTS, k=count)
    for n in range(count):
        set_id = f"{rng.getrandbits(128):032x}"
        while set_id in taken or set_id in new_ids:
            set_id = f"{rng.getrandbits(128):032x}"
        new_ids.add(set_id)
        created = round(now - _HISTORY_SPAN * rand(), 3)
        # Later versions spread over the time left until now, in order.
        step = (now - created) / (counts[n] + 1)
        first = choices(_FIRST_STATUS, _FIRST_WEIGHTS)[0]
        versions = [
            Version(
                "1",
                "ACTIVE",
                first,
                created,
                None,
                None,
                _FAILURE_MESSAGES.get(first),
                None,
                True,
            )
        ]
        updated = created
        for v in range(2, counts[n] + 1):
            status = choices(_LATER_STATUS, _LATER_WEIGHTS)[0]
            updated = round(updated + step * (0.5 + rand()), 3)
            updated = min(updated, now)
            versions.append(
                Version(
                    str(v),
                    "ACTIVE",
                    status,
                    created,
                    updated,
                    None,
                    _FAILURE_MESSAGES.get(status),
                    True if rand() < _FORCED_RATIO else None,
                    True,
                )
            )
        out.append(ImageSet(set_id, versions, _tags(rng, start + n), created, updated))
    return out


def _tags(rng: random.Random, n: int) -> dict[str, object]:
    """Obviously fake patient data: DEMO^PATIENT names and FAKE- ids."""
    study = f"1.2.826.0.1.3680043.8.498.{n + 1}"
    return {
        "DICOMPatientId": f"FAKE-{n + 1:06d}",
        "DICOMPatientName": f"DEMO^PATIENT^{_FIRST_NAMES[n % len(_FIRST_NAMES)]}",
        "DICOMPatientBirthDate": f"19{rng.randrange(30, 99)}0101",
        "DICOMPatientSex": "O",
        "DICOMStudyInstanceUID": study,
        "DICOMStudyId": f"FAKE-STUDY-{n + 1}",
        "DICOMStudyDescription": "SYNTHETIC DEMO STUDY",
        "DICOMAccessionNumber": f"FAKE-ACC-{n + 1:06d}",
        "DICOMSeriesModality": _MODALITIES[n % len(_MODALITIES)],
        "DICOMSeriesBodyPart": _BODY_PARTS[n % len(_BODY_PARTS)],
        "DICOMNumberOfStudyRelatedSeries": 1 + n % 4,
        "DICOMNumberOfStudyRelatedInstances": 10 + n % 500,
        "DICOMStudyDate": "20240101",
        "DICOMStudyTime": "120000.000000",
    }
