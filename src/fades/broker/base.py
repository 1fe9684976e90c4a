"""What the data broker hands to functions, and the interface every connector implements.

A :class:`Dataset` is columnar: one float64 array of timestamps, one of values, and three
categorical columns (sensor type, location, device) stored as small integer codes with a
label table. Columnar arrays move into the sandbox as raw bytes, with no per-element work.

A :class:`BoundedConnector` can also count what a selector selects (up to a cap, without
fetching it) and stops a fetch at a deadline or a row cap; the broker uses that to refuse
oversized retrievals before paying for them (see :class:`FetchLimits`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from fades.task import Selector

CATEGORICAL = ("sensor_type", "location", "device")

F64 = npt.NDArray[np.float64]
U16 = npt.NDArray[np.uint16]

#: Bytes one reading takes in a dataset and in the input blob: ts and value (float64) and
#: three uint16 codes.
ROW_BYTES = 8 + 8 + 2 * len(CATEGORICAL)


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


@runtime_checkable
class BoundedConnector(Connector, Protocol):
    """A connector that can count before fetching, and stop a fetch that overruns.

    ``deadline`` is a :func:`time.monotonic` value; past it, both methods raise
    :class:`~fades.errors.RetrievalTimeLimitExceeded` (the broker supplies the limit's
    value). ``fetch(..., max_rows=n)`` raises :class:`~fades.errors.InputTooLarge` as soon as
    it would hold more than ``n`` rows.
    """

    def count_at_most(self, select: Selector, cap: int, *, deadline: float | None = None) -> int:
        """Rows that ``fetch(select)`` returns, or any number above ``cap`` if there are more.

        The work done is bounded by ``cap``: at most ``cap + 1`` rows are counted.
        """
        ...

    def fetch(
        self, select: Selector, *, deadline: float | None = None, max_rows: int | None = None
    ) -> Dataset:
        """Like :meth:`Connector.fetch`, bounded by ``deadline`` and ``max_rows``."""
        ...


@dataclass(frozen=True, slots=True)
class FetchLimits:
    """What one :meth:`~fades.broker.DataBroker.fetch` may cost.

    Attributes:
        max_ops: data operations in one request.
        max_rows: rows of all operations together.
        max_bytes: bytes of all datasets together (rows x :data:`ROW_BYTES`).
        seconds: wall time of the whole retrieval (counting and fetching).
        bytes_limit: the name of the limit ``max_bytes`` comes from, for error messages
            (``max_input_bytes``, or ``memory_mib`` when the function's cap is smaller).
    """

    max_ops: int = 32
    max_rows: int = 5_000_000
    max_bytes: int = 256 * 2**20
    seconds: float = 30.0
    bytes_limit: str = "max_input_bytes"

    def __post_init__(self) -> None:
        for name in ("max_ops", "max_rows", "max_bytes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"FetchLimits.{name} must be a positive integer, got {v!r}")
        if not (isinstance(self.seconds, int | float) and math.isfinite(self.seconds)):
            raise ValueError(f"FetchLimits.seconds must be a finite number, got {self.seconds!r}")
        if self.seconds <= 0:
            raise ValueError(f"FetchLimits.seconds must be positive, got {self.seconds!r}")

    @property
    def row_cap(self) -> int:
        """Rows allowed by both the row and the byte limit."""
        return min(self.max_rows, self.max_bytes // ROW_BYTES)
