"""Fault injection: the frozen Faults settings and the mutable state that applies them."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .errors import InternalError, ThrottlingError


@dataclass(frozen=True)
class Faults:
    """What to break: ratios of throttled/failed requests, latency, malformed bodies, quotas."""

    throttle_ratio: float = 0.0
    error_ratio: float = 0.0
    latency_seconds: float = 0.0
    malformed_responses: int = 0
    access_denied_datastores: frozenset[str] = field(default_factory=frozenset)
    quota_per_second: float | None = None
    seed: int | None = None
    # Per-operation quotas (requests per second) override quota_per_second for those
    # operations, e.g. {"ListDICOMImportJobs": 10, "GetDatastore": 10} as AWS's defaults.
    operation_quotas: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse settings that cannot mean anything, with the field's name."""
        for name in ("throttle_ratio", "error_ratio"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        if self.latency_seconds < 0:
            raise ValueError(f"latency_seconds must be >= 0, got {self.latency_seconds!r}")
        if self.malformed_responses < 0:
            raise ValueError(f"malformed_responses must be >= 0, got {self.malformed_responses!r}")
        if self.quota_per_second is not None and self.quota_per_second <= 0:
            raise ValueError(f"quota_per_second must be > 0, got {self.quota_per_second!r}")
        for operation, rate in self.operation_quotas.items():
            if not isinstance(operation, str) or isinstance(rate, bool):
                raise ValueError("operation_quotas maps operation names to numbers")
            if not isinstance(rate, int | float) or rate <= 0:
                raise ValueError(f"operation_quotas[{operation!r}] must be > 0, got {rate!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with the Python field names."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["access_denied_datastores"] = sorted(self.access_denied_datastores)
        out["operation_quotas"] = dict(self.operation_quotas)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Faults:
        """Build from a JSON object; unknown keys and wrong types raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key == "access_denied_datastores":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ValueError("access_denied_datastores must be a list of strings")
                kwargs[key] = frozenset(value)
            elif key == "operation_quotas":
                if not isinstance(value, dict):
                    raise ValueError("operation_quotas must be an object")
                kwargs[key] = dict(value)
            elif key in ("malformed_responses", "seed"):
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                    raise ValueError(f"{key} must be an integer")
                kwargs[key] = value
            else:
                if value is not None and (
                    isinstance(value, bool) or not isinstance(value, int | float)
                ):
                    raise ValueError(f"{key} must be a number")
                kwargs[key] = value
        if kwargs.get("malformed_responses") is None:
            kwargs.pop("malformed_responses", None)
        return cls(**kwargs)


class _TokenBucket:
    """Refills `rate` tokens a second up to one second's worth (at least one)."""

    __slots__ = ("_capacity", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, now: float) -> None:
        self._rate = rate
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._last = now

    def take(self, now: float) -> bool:
        self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class FaultState:
    """Applies one Faults setting; not thread-safe on its own, the backend lock guards it."""

    def __init__(self, faults: Faults, monotonic: Callable[[], float]) -> None:
        """Start a fresh random stream, fresh buckets and the full malformed countdown."""
        self._faults = faults
        self._monotonic = monotonic
        self._rng = random.Random(faults.seed)
        self._buckets: dict[str, _TokenBucket] = {}
        self._malformed_left = faults.malformed_responses

    @property
    def faults(self) -> Faults:
        """The settings, with malformed_responses showing how many are still to come."""
        return replace(self._faults, malformed_responses=self._malformed_left)

    @property
    def latency_seconds(self) -> float:
        """How long each data-plane request sleeps before it is answered."""
        return self._faults.latency_seconds

    def admit(self, operation: str) -> None:
        """Raise ThrottlingException or InternalServerException if this request is to fail."""
        f = self._faults
        quota = f.operation_quotas.get(operation, f.quota_per_second)
        if quota is not None:
            now = self._monotonic()
            bucket = self._buckets.get(operation)
            if bucket is None:
                bucket = self._buckets[operation] = _TokenBucket(quota, now)
            if not bucket.take(now):
                raise ThrottlingError("Rate exceeded")
        if f.throttle_ratio and self._rng.random() < f.throttle_ratio:
            raise ThrottlingError("Rate exceeded")
        if f.error_ratio and self._rng.random() < f.error_ratio:
            raise InternalError("Injected internal server error")

    def denies(self, datastore_id: str) -> bool:
        """Whether requests for this datastore get AccessDeniedException."""
        return datastore_id in self._faults.access_denied_datastores

    def take_malformed(self) -> bool:
        """Whether this successful response should be sent truncated (counts one down)."""
        if self._malformed_left > 0:
            self._malformed_left -= 1
            return True
        return False
