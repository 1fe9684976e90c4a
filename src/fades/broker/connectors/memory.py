"""An in-memory connector: a fake data source for users, examples and tests.

It also holds the numpy selection helpers that every connector keeping its readings as columns
(memory, CSV) shares: :func:`select_columns` applies a :class:`~fades.task.Selector` to a
:class:`~fades.broker.base.Dataset`, :func:`count_columns` counts what it would select
without copying any column, and :func:`concat` merges two datasets.

Both connectors are :class:`~fades.broker.base.BoundedConnector`: a selection over data held
in memory is one vectorised pass, so the deadline is checked before and after it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fades.broker.base import CATEGORICAL, U16, Dataset, DataSummary
from fades.errors import InputTooLarge, RetrievalTimeLimitExceeded
from fades.task import Selector


def check_deadline(deadline: float | None) -> None:
    """Raise :class:`RetrievalTimeLimitExceeded` if ``deadline`` (monotonic) has passed.

    The error's ``seconds`` is 0 here; the broker re-raises it with the node's limit.
    """
    if deadline is not None and time.monotonic() > deadline:
        raise RetrievalTimeLimitExceeded(0.0)


def too_many_rows(max_rows: int) -> InputTooLarge:
    """The error a connector raises when a fetch would hold more than ``max_rows`` rows."""
    return InputTooLarge(
        f"the selection holds more than {max_rows} rows", limit="max_rows", value=max_rows
    )


def _lookup(labels: list[str], wanted: list[str]) -> U16:
    index = {lab: i for i, lab in enumerate(labels)}
    return np.array([index[w] for w in wanted if w in index], np.uint16)


def compact(ds: Dataset) -> Dataset:
    """Drop labels no reading uses and renumber the codes (labels stay sorted)."""
    codes: dict[str, U16] = {}
    labels: dict[str, list[str]] = {}
    for name in CATEGORICAL:
        used, inverse = np.unique(ds.codes[name], return_inverse=True)
        labels[name] = [ds.labels[name][i] for i in used]
        codes[name] = inverse.astype(np.uint16).reshape(-1)
    present = set(labels["sensor_type"])
    units = {k: v for k, v in ds.units.items() if k in present}
    return Dataset(ts=ds.ts, value=ds.value, codes=codes, labels=labels, units=units)


def take(ds: Dataset, index: npt.NDArray[Any]) -> Dataset:
    """The rows ``index`` (a boolean mask or integer indices) of ``ds``, labels unchanged."""
    return Dataset(
        ts=ds.ts[index],
        value=ds.value[index],
        codes={c: ds.codes[c][index] for c in CATEGORICAL},
        labels={c: list(ds.labels[c]) for c in CATEGORICAL},
        units=dict(ds.units),
    )


def _mask(ds: Dataset, select: Selector, now: float | None) -> npt.NDArray[np.bool_]:
    from datetime import UTC, datetime

    mask = np.ones(len(ds), bool)
    for name, wanted in zip(
        CATEGORICAL, (select.sensor_types, select.locations, select.devices), strict=True
    ):
        if wanted is not None:
            mask &= np.isin(ds.codes[name], _lookup(ds.labels[name], wanted))
    start, end = select.time_bounds(datetime.fromtimestamp(now, UTC) if now is not None else None)
    if start is not None:
        mask &= ds.ts >= start
    if end is not None:
        mask &= ds.ts < end
    return mask


def count_columns(ds: Dataset, select: Selector, now: float | None = None) -> int:
    """How many rows :func:`select_columns` would return, without copying any column."""
    n = int(np.count_nonzero(_mask(ds, select, now)))
    return n if select.last is None else min(n, select.last)


def select_columns(
    ds: Dataset, select: Selector, now: float | None = None, *, max_rows: int | None = None
) -> Dataset:
    """Apply ``select`` to ``ds``: filter, order by time, keep the newest ``last`` rows.

    The time window is half-open: ``since <= ts < until``. ``now`` (epoch seconds) anchors
    ``last_seconds``; by default the current time. More than ``max_rows`` selected rows raise
    :class:`InputTooLarge` before any column is copied.
    """
    idx = np.flatnonzero(_mask(ds, select, now))
    if max_rows is not None and min(len(idx), select.last or len(idx)) > max_rows:
        raise too_many_rows(max_rows)
    ts = ds.ts[idx]
    if len(ts) > 1 and bool(np.any(ts[1:] < ts[:-1])):
        idx = idx[np.argsort(ts, kind="stable")]
    if select.last is not None:
        idx = idx[-select.last :]
    return compact(take(ds, idx))


def concat(a: Dataset, b: Dataset) -> Dataset:
    """Rows of ``a`` then rows of ``b`` (not re-sorted), with merged label tables."""
    codes: dict[str, U16] = {}
    labels: dict[str, list[str]] = {}
    for name in CATEGORICAL:
        merged = sorted(set(a.labels[name]) | set(b.labels[name]))
        pos = {lab: i for i, lab in enumerate(merged)}
        map_a = np.array([pos[x] for x in a.labels[name]] or [0], np.uint16)
        map_b = np.array([pos[x] for x in b.labels[name]] or [0], np.uint16)
        codes[name] = np.concatenate([map_a[a.codes[name]], map_b[b.codes[name]]])
        labels[name] = merged
    return Dataset(
        ts=np.concatenate([a.ts, b.ts]),
        value=np.concatenate([a.value, b.value]),
        codes=codes,
        labels=labels,
        units={**a.units, **b.units},
    )


def keys_of(ds: Dataset) -> set[tuple[str, str]]:
    """The (location, sensor type) pairs present in ``ds`` (one vectorised pass)."""
    if len(ds) == 0:
        return set()
    key = ds.codes["location"].astype(np.int64) * 65536 + ds.codes["sensor_type"]
    loc, st = ds.labels["location"], ds.labels["sensor_type"]
    return {(loc[int(k) // 65536], st[int(k) % 65536]) for k in np.unique(key)}


def summarise(ds: Dataset) -> list[DataSummary]:
    """One :class:`DataSummary` per (location, sensor type) present in ``ds``."""
    out: list[DataSummary] = []
    if len(ds) == 0:
        return out
    loc, st = ds.codes["location"], ds.codes["sensor_type"]
    key = loc.astype(np.int64) * 65536 + st
    for k in np.unique(key):
        sel = key == k
        ts = ds.ts[sel]
        stype = ds.labels["sensor_type"][int(k) % 65536]
        out.append(
            DataSummary(
                location=ds.labels["location"][int(k) // 65536],
                sensor_type=stype,
                unit=ds.units.get(stype, ""),
                rows=int(sel.sum()),
                first_ts=float(ts.min()),
                last_ts=float(ts.max()),
            )
        )
    return out


class MemoryConnector:
    """Readings held in memory. Thread-safe; writes are appended, fetches see a snapshot.

    Example::

        mem = MemoryConnector()
        mem.add(1_700_000_000.0, 21.5, "temperature", "°C", "room1", "room1-temperature-1")
        mem.fetch(Selector(location="room1"))
    """

    def __init__(self, dataset: Dataset | None = None) -> None:
        self._data = dataset if dataset is not None else Dataset.empty()
        self._pending: list[tuple[float, float, str, str, str]] = []
        self._pending_units: dict[str, str] = {}
        self._lock = threading.Lock()
        #: (location, sensor type) pairs held, kept up to date as readings are added
        self._keys = keys_of(self._data)

    @classmethod
    def from_records(
        cls,
        ts: Sequence[float],
        value: Sequence[float],
        sensor_type: Sequence[str],
        location: Sequence[str],
        device: Sequence[str],
        units: dict[str, str] | None = None,
    ) -> MemoryConnector:
        """A connector holding the given parallel per-reading sequences."""
        return cls(
            Dataset.from_records(
                list(ts), list(value), list(sensor_type), list(location), list(device), units
            )
        )

    def add(
        self, ts: float, value: float, sensor_type: str, unit: str, location: str, device: str
    ) -> None:
        """Append one reading."""
        with self._lock:
            self._pending.append((float(ts), float(value), sensor_type, location, device))
            self._pending_units[sensor_type] = unit
            self._keys.add((location, sensor_type))

    def extend(self, dataset: Dataset) -> None:
        """Append all readings of ``dataset``."""
        with self._lock:
            self._flush()
            self._data = concat(self._data, dataset)
            self._keys |= keys_of(dataset)

    def _flush(self) -> None:
        if self._pending:
            ts, value, st, loc, dev = (list(col) for col in zip(*self._pending, strict=True))
            extra = Dataset.from_records(ts, value, st, loc, dev, self._pending_units)
            self._data = concat(self._data, extra)
            self._pending.clear()
            self._pending_units.clear()

    def snapshot(self) -> Dataset:
        """All readings held (unsorted, in insertion order)."""
        with self._lock:
            self._flush()
            return self._data

    def fetch(
        self, select: Selector, *, deadline: float | None = None, max_rows: int | None = None
    ) -> Dataset:
        check_deadline(deadline)
        out = select_columns(self.snapshot(), select, max_rows=max_rows)
        check_deadline(deadline)
        return out

    def count_at_most(self, select: Selector, cap: int, *, deadline: float | None = None) -> int:
        check_deadline(deadline)
        return count_columns(self.snapshot(), select)

    def describe(self) -> list[DataSummary]:
        return summarise(self.snapshot())

    def sensor_keys(self) -> set[tuple[str, str]]:
        """The (location, sensor type) pairs held (no pass over the readings)."""
        with self._lock:
            return set(self._keys)

    def count(self) -> int:
        return len(self.snapshot())
