"""What the data broker hands to functions, and the interface every connector implements.

A :class:`Dataset` is columnar: one float64 array of timestamps, one of values, and three
categorical columns (sensor type, location, device) stored as small integer codes with a
label table. Columnar arrays move into the sandbox as raw bytes, with no per-element work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from fades.task import Selector

CATEGORICAL = ("sensor_type", "location", "device")

F64 = npt.NDArray[np.float64]
U16 = npt.NDArray[np.uint16]


@dataclass(slots=True)
class Dataset:
    """Readings selected by one data operation, as columns.

    Attributes:
        ts: epoch seconds, float64, ascending.
        value: reading values, float64.
        codes: for each categorical column, a uint16 array of indices into ``labels``.
        labels: for each categorical column, the label of each code.
        units: unit of each sensor type present.
    """

    ts: F64
    value: F64
    codes: dict[str, U16]
    labels: dict[str, list[str]]
    units: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.ts)
        if len(self.value) != n or any(len(self.codes[c]) != n for c in CATEGORICAL):
            raise ValueError("all dataset columns must have the same length")

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def nbytes(self) -> int:
        """Bytes of column data (what a function receives)."""
        return int(self.ts.nbytes + self.value.nbytes + sum(c.nbytes for c in self.codes.values()))

    def column(self, name: str) -> list[str]:
        """Decode a categorical column to labels (slow for large datasets; for tests/debug)."""
        lab = self.labels[name]
        return [lab[i] for i in self.codes[name]]

    @classmethod
    def empty(cls) -> Dataset:
        return cls(
            ts=np.empty(0, np.float64),
            value=np.empty(0, np.float64),
            codes={c: np.empty(0, np.uint16) for c in CATEGORICAL},
            labels={c: [] for c in CATEGORICAL},
        )

    @classmethod
    def from_records(
        cls,
        ts: list[float] | F64,
        value: list[float] | F64,
        sensor_type: list[str],
        location: list[str],
        device: list[str],
        units: dict[str, str] | None = None,
    ) -> Dataset:
        """Build a dataset from parallel per-reading lists (convenient, not fast)."""
        codes: dict[str, U16] = {}
        labels: dict[str, list[str]] = {}
        for name, col in zip(CATEGORICAL, (sensor_type, location, device), strict=True):
            uniq = sorted(set(col))
            index = {v: i for i, v in enumerate(uniq)}
            codes[name] = np.fromiter((index[v] for v in col), np.uint16, count=len(col))
            labels[name] = uniq
        return cls(
            ts=np.asarray(ts, np.float64),
            value=np.asarray(value, np.float64),
            codes=codes,
            labels=labels,
            units=dict(units or {}),
        )


@dataclass(slots=True, frozen=True)
class DataSummary:
    """What a connector holds for one (location, sensor type): for registries and policies."""

    location: str
    sensor_type: str
    unit: str
    rows: int
    first_ts: float | None
    last_ts: float | None


@runtime_checkable
class Connector(Protocol):
    """A data source on the node. Implementations must be safe to call from several threads."""

    def fetch(self, select: Selector) -> Dataset:
        """Return the readings that ``select`` selects, ordered by time."""
        ...

    def describe(self) -> list[DataSummary]:
        """Summarise what this connector holds."""
        ...
