"""Readings from a CSV file in long format: one reading per row.

The default columns are ``ts,value,sensor_type,unit,location,device``. ``ts`` is either epoch
seconds or an ISO-8601 date-time (naive times are taken as UTC). Other headers can be mapped
onto these names, and a missing column can be given one constant value for every row::

    CSVConnector("lab.csv", columns={"ts": "time", "value": "reading"},
                 defaults={"location": "lab", "device": "lab-1", "unit": ""})

The file is parsed once, on the first fetch (or count), and kept in memory as columns. The
file is the operator's, not a tenant's: its parse is not bounded by a task's limits.
"""

from __future__ import annotations

import csv
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from fades.broker.base import CATEGORICAL, Dataset, DataSummary
from fades.broker.connectors.memory import (
    check_deadline,
    count_columns,
    keys_of,
    select_columns,
    summarise,
)
from fades.errors import ConnectorError
from fades.task import Selector

FIELDS = ("ts", "value", "sensor_type", "unit", "location", "device")


def parse_ts(text: str) -> float:
    """Epoch seconds from ``text``: a number, or an ISO-8601 date-time (naive means UTC)."""
    try:
        return float(text)
    except ValueError:
        pass
    t = text.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    dt = datetime.fromisoformat(t)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


class CSVConnector:
    """A CSV file of readings, answering the same selectors as the SQLite store.

    Args:
        path: the CSV file.
        columns: maps a reading field (``ts``, ``value``, ``sensor_type``, ``unit``,
            ``location``, ``device``) to the header of the column holding it.
        defaults: a constant value for a field the file has no column for.
        delimiter: the field separator.
    """

    def __init__(
        self,
        path: str | Path,
        columns: Mapping[str, str] | None = None,
        defaults: Mapping[str, str] | None = None,
        delimiter: str = ",",
    ) -> None:
        self.path = Path(path)
        unknown = sorted((set(columns or {}) | set(defaults or {})) - set(FIELDS))
        if unknown:
            raise ConnectorError(
                f"unknown reading field(s) {', '.join(unknown)} in the CSV mapping; "
                f"fields are {', '.join(FIELDS)}",
                connector="csv",
            )
        self.columns = {f: (columns or {}).get(f, f) for f in FIELDS}
        self.defaults = dict(defaults or {})
        self.delimiter = delimiter
        self._data: Dataset | None = None
        self._keys: set[tuple[str, str]] | None = None
        self._lock = threading.Lock()

    def load(self) -> Dataset:
        """Parse the file (once) and return all its readings."""
        with self._lock:
            if self._data is None:
                self._data = self._read()
            return self._data

    def _read(self) -> Dataset:
        try:
            with self.path.open(newline="", encoding="utf-8") as fh:
                reader = csv.reader(fh, delimiter=self.delimiter)
                header = next(reader, None)
                if header is None:
                    return Dataset.empty()
                pos = {h.strip(): i for i, h in enumerate(header)}
                getters: dict[str, int | None] = {}
                for f in FIELDS:
                    col = self.columns[f]
                    if col in pos:
                        getters[f] = pos[col]
                    elif f in self.defaults:
                        getters[f] = None
                    else:
                        raise ConnectorError(
                            f"{self.path}: no column {col!r} for field {f!r} and no default; "
                            f"header is {', '.join(header)}",
                            connector="csv",
                        )
                ts: list[float] = []
                value: list[float] = []
                cats: dict[str, list[str]] = {c: [] for c in (*CATEGORICAL, "unit")}
                units: dict[str, str] = {}
                for lineno, row in enumerate(reader, start=2):
                    if not row:
                        continue

                    def cell(f: str, row: list[str] = row) -> str:
                        i = getters[f]
                        return self.defaults[f] if i is None else row[i]

                    try:
                        ts.append(parse_ts(cell("ts")))
                        value.append(float(cell("value")))
                        for c in cats:
                            cats[c].append(cell(c))
                    except (ValueError, IndexError) as exc:
                        raise ConnectorError(
                            f"{self.path} line {lineno}: bad reading ({exc})", connector="csv"
                        ) from None
                    units.setdefault(cats["sensor_type"][-1], cats["unit"][-1])
        except OSError as exc:
            raise ConnectorError(
                f"cannot read CSV file {self.path}: {exc.strerror}", connector="csv"
            ) from exc
        ds = Dataset.from_records(
            np.asarray(ts, np.float64),
            np.asarray(value, np.float64),
            cats["sensor_type"],
            cats["location"],
            cats["device"],
            units,
        )
        order = np.argsort(ds.ts, kind="stable")
        return Dataset(
            ts=ds.ts[order],
            value=ds.value[order],
            codes={c: ds.codes[c][order] for c in CATEGORICAL},
            labels=ds.labels,
            units=ds.units,
        )

    def fetch(
        self,
        select: Selector,
        now: float | None = None,
        *,
        deadline: float | None = None,
        max_rows: int | None = None,
    ) -> Dataset:
        check_deadline(deadline)
        out = select_columns(self.load(), select, now, max_rows=max_rows)
        check_deadline(deadline)
        return out

    def count_at_most(self, select: Selector, cap: int, *, deadline: float | None = None) -> int:
        """Rows ``fetch(select)`` returns (the file is parsed on first use, then counted)."""
        check_deadline(deadline)
        return count_columns(self.load(), select)

    def describe(self) -> list[DataSummary]:
        return summarise(self.load())

    def sensor_keys(self) -> set[tuple[str, str]]:
        """The (location, sensor type) pairs in the file (found once, after parsing it)."""
        if self._keys is None:
            self._keys = keys_of(self.load())
        return set(self._keys)

    def count(self) -> int:
        return len(self.load())

    def __repr__(self) -> str:
        return f"CSVConnector({str(self.path)!r})"
