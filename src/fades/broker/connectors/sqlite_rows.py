"""Row-level helpers of the SQLite connector: the WHERE clause of a selection, trimming a
``last`` selection while it is read, and turning per-sensor row arrays into a
:class:`~fades.broker.base.Dataset`. Kept apart so that the connector stays readable.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from fades.broker.base import CATEGORICAL, U16, Dataset
from fades.broker.connectors.memory import compact
from fades.task import Selector

#: One row as SQLite returns it for a sensor.
ROW = np.dtype([("ts", np.float64), ("value", np.float64)])

Sensor = tuple[int, str, str, str, str]  # id, sensor_type, unit, location, device


def assemble(parts: list[npt.NDArray[np.void]], kept: list[Sensor], last: int | None) -> Dataset:
    """One dataset, ordered by time, from the rows read for each sensor in ``kept``."""
    if not kept:
        return Dataset.empty()
    keep = [i for i, p in enumerate(parts) if len(p)]
    parts, kept = [parts[i] for i in keep], [kept[i] for i in keep]
    counts = np.array([len(p) for p in parts], np.int64)
    rows_all = np.concatenate(parts) if len(parts) > 1 else parts[0]
    ts = np.ascontiguousarray(rows_all["ts"])
    value = np.ascontiguousarray(rows_all["value"])
    codes: dict[str, U16] = {}
    labels: dict[str, list[str]] = {}
    for name, pos in zip(CATEGORICAL, (1, 3, 4), strict=True):
        labs = sorted({str(s[pos]) for s in kept})
        index = {lab: i for i, lab in enumerate(labs)}
        per_sensor = np.array([index[str(s[pos])] for s in kept], np.uint16)
        codes[name] = np.repeat(per_sensor, counts)
        labels[name] = labs
    if len(kept) > 1:
        order = np.argsort(ts, kind="stable")
        if last is not None:
            order = order[-last:]
        ts, value = ts[order], value[order]
        codes = {c: a[order] for c, a in codes.items()}
        if last is not None:
            return compact(
                Dataset(ts=ts, value=value, codes=codes, labels=labels, units=units(kept))
            )
    return Dataset(ts=ts, value=value, codes=codes, labels=labels, units=units(kept))


def window(select: Selector, now: float | None) -> tuple[str, list[float]]:
    """The WHERE clause (one sensor, the time window) of a selection and its arguments."""
    start, end = select.time_bounds(datetime.fromtimestamp(now, UTC) if now is not None else None)
    where = "sensor_id=?"
    args: list[float] = []
    if start is not None:
        where += " AND ts>=?"
        args.append(start)
    if end is not None:
        where += " AND ts<?"
        args.append(end)
    return where, args


def keep_newest(parts: list[npt.NDArray[np.void]], last: int) -> int:
    """Trim each (ascending) part to the rows among the newest ``last`` of all parts (ties
    kept); returns the rows still held. Keeps a ``last`` selection over many sensors at most
    about twice ``last`` rows in memory."""
    ts = np.concatenate([p["ts"] for p in parts])
    threshold = np.partition(ts, len(ts) - last)[len(ts) - last]
    for i, p in enumerate(parts):
        parts[i] = p[int(np.searchsorted(p["ts"], threshold, side="left")) :]
    return sum(len(p) for p in parts)


def units(sensors: Iterable[Sensor]) -> dict[str, str]:
    return {s[1]: s[2] for s in sensors}
