"""Metric families as pre-formatted sample lines, shared by the text and OpenMetrics formats."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["gauge", "counter", "histogram"]


def escape_label_value(value: str) -> str:
    """Escape a label value for both exposition formats."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def format_value(value: float) -> str:
    """Format a sample value as both formats accept it."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def label_pairs(**labels: str) -> str:
    """Render labels as `name="value",...` in the order given."""
    return ",".join(f'{name}="{escape_label_value(value)}"' for name, value in labels.items())


@dataclass(slots=True)
class Family:
    """One metric family: its metadata and its sample lines, each ending in a newline."""

    name: str  # without `_total`, as OpenMetrics names counter families
    kind: Kind
    help: str
    # A list that add() fills, or any iterable of sample lines (from sample()), consumed once.
    lines: Iterable[str] = field(default_factory=list)

    @property
    def sample_name(self) -> str:
        """Return the name samples carry."""
        return self.name + "_total" if self.kind == "counter" else self.name

    def sample(self, labels: str, value: float) -> str:
        """Format one sample line; `labels` comes from label_pairs (or is built the same way)."""
        return f"{self.sample_name}{{{labels}}} {format_value(value)}\n"

    def add(self, labels: str, value: float) -> None:
        """Append a sample to a family whose lines are a list."""
        assert isinstance(self.lines, list), "add() is for families built as lists"
        self.lines.append(self.sample(labels, value))

    def text_header(self) -> str:
        """Return HELP and TYPE lines in the Prometheus text format."""
        return f"# HELP {self.sample_name} {self.help}\n# TYPE {self.sample_name} {self.kind}\n"

    def openmetrics_header(self) -> str:
        """Return HELP and TYPE lines in OpenMetrics."""
        return f"# HELP {self.name} {self.help}\n# TYPE {self.name} {self.kind}\n"


BATCH_LINES = 4096


def chunks(families: Iterable[Family], openmetrics: bool) -> Iterator[bytes]:
    """Encode families in batches of lines, in either format (without OpenMetrics' `# EOF`)."""
    for family in families:
        batch = [family.openmetrics_header() if openmetrics else family.text_header()]
        for line in family.lines:
            batch.append(line)
            if len(batch) >= BATCH_LINES:
                yield "".join(batch).encode()
                batch = []
        yield "".join(batch).encode()
