"""Row-level helpers of the SQLite connector: the WHERE clause of a selection, reading the
selected rows sensor by sensor (trimming a ``last`` selection while it is read), turning
per-sensor row arrays into a :class:`~fades.broker.base.Dataset`, and encoding the categorical
columns of written readings. Kept apart so that the connector stays readable.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from fades.broker.base import CATEGORICAL, U16, Dataset
from fades.broker.connectors.memory import compact, too_many_rows
from fades.errors import ConnectorError
from fades.task import Selector

#: One row as SQLite returns it for a sensor.
ROW = np.dtype([("ts", np.float64), ("value", np.float64)])

Sensor = tuple[int, str, str, str, str]  # id, sensor_type, unit, location, device
#: A written column: one string for every reading, or one value per reading.
Categorical = str | Sequence[str] | npt.NDArray[Any]


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


def read_rows(
    conn: sqlite3.Connection,
    sensors: list[Sensor],
    select: Selector,
    now: float | None,
    max_rows: int | None,
) -> Dataset:
    """The rows of ``sensors`` that ``select`` selects, as one dataset ordered by time; more
    than ``max_rows`` raise :class:`~fades.errors.InputTooLarge` after reading at most
    ``max_rows + 1`` of them."""
    if not sensors:
        return Dataset.empty()
    where, args = window(select, now)
    last = select.last
    if last is not None:
        sql = f"SELECT ts, value FROM readings WHERE {where} ORDER BY ts DESC LIMIT ?"
    else:
        sql = f"SELECT ts, value FROM readings WHERE {where} ORDER BY ts LIMIT ?"
    # the result holds min(last, all selected) rows: only that may exceed max_rows
    strict = max_rows is not None and (last is None or last > max_rows)
    parts: list[npt.NDArray[np.void]] = []
    kept: list[Sensor] = []
    held = 0
    for s in sensors:
        limit = last if last is not None else -1  # -1: no LIMIT in SQLite
        if strict:
            assert max_rows is not None
            room = max_rows + 1 - held
            limit = room if limit < 0 else min(limit, room)
        rows = np.fromiter(conn.execute(sql, (s[0], *args, limit)), dtype=ROW)
        if not len(rows):
            continue
        parts.append(rows[::-1] if last is not None else rows)
        kept.append(s)
        held += len(rows)
        if strict and max_rows is not None and held > max_rows:
            raise too_many_rows(max_rows)
        if last is not None and held > 2 * last:
            held = keep_newest(parts, last)
    return assemble(parts, kept, last)


def factorise(
    n: int, columns: Sequence[tuple[str, Categorical]]
) -> tuple[list[list[str]], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Encode ``n`` rows of categorical columns (each one string or ``n`` values): each
    column's distinct values, the distinct combinations of them (a code each, decoded
    last column first), and each row's index into those combinations.

    Raises:
        ConnectorError: a column does not have ``n`` entries.
    """
    uniques: list[list[str]] = []
    inverses: list[npt.NDArray[np.int64]] = []
    for name, col in columns:
        if isinstance(col, str):
            uniques.append([col])
            inverses.append(np.zeros(n, np.int64))
            continue
        arr = np.asarray(col, dtype=object).reshape(-1)
        if len(arr) != n:
            raise ConnectorError(
                f"column {name} has {len(arr)} entries, expected {n}", connector="sqlite"
            )
        uniq, inv = np.unique(arr.astype(str), return_inverse=True)
        uniques.append([str(u) for u in uniq])
        inverses.append(inv.reshape(-1).astype(np.int64))
    key = np.zeros(n, np.int64)
    for u, inv in zip(uniques, inverses, strict=True):
        key = key * len(u) + inv
    combos, combo_inv = np.unique(key, return_inverse=True)
    return uniques, combos, combo_inv.reshape(-1)
