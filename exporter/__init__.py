"""Prometheus exporter for AWS HealthImaging image set versions."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("healthimaging-exporter")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
