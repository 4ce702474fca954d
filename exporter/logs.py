"""Logging set-up: plain lines or JSON, and third-party loggers kept quiet about payloads."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

from exporter.aws import silence_payload_logging

LEVELS = ("debug", "info", "warning", "error")
# promlog's spelling, which exporter-toolkit users type: the same level as "warning".
LEVEL_ALIASES = {"warn": "warning"}
FORMATS = ("plain", "json")
# APScheduler logs every run at INFO; the AWS SDK's loggers are kept quiet by the aws module.
QUIET_LOGGERS = ("apscheduler",)


def _timestamp(record: logging.LogRecord) -> str:
    millis = int(record.msecs)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{millis:03d}Z"


class PlainFormatter(logging.Formatter):
    """`time level logger: message`, one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        """Format a record as one line."""
        message = " ".join(record.getMessage().split())
        line = f"{_timestamp(record)} {record.levelname.lower():7} {record.name}: {message}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        """Format a record as a JSON line."""
        data = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, separators=(",", ":"))


def parse_level(text: str) -> str:
    """Return the level named, in any case, `warn` as `warning`; ValueError if none is."""
    name = text.strip().lower()
    name = LEVEL_ALIASES.get(name, name)
    if name not in LEVELS:
        raise ValueError(f"must be one of debug, info, warn, warning, error, got {text!r}")
    return name


def parse_format(text: str) -> str:
    """Return the log format named, in any case; ValueError if none is."""
    name = text.strip().lower()
    if name not in FORMATS:
        raise ValueError(f"must be one of {', '.join(FORMATS)}, got {text!r}")
    return name


def configure_logging(
    level: str = "info", fmt: str = "plain", stream: TextIO | None = None
) -> None:
    """Send the exporter's logs to stderr in the chosen format and level."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(parse_level(level).upper())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    silence_payload_logging()
