"""The fades function SDK: what a function sees of its data.

This module runs in two places: inside the sandbox (bundled into the Python runtime
component) and on the host, where the same decoder runs functions natively for tests and
baselines. It is therefore pure standard library.

A function is a plain Python callable::

    def main(data: dict[str, Dataset], params: dict) -> object:
        temp = data["temperature"]
        return {"mean": sum(temp.values) / len(temp)}

``Dataset.ts`` and ``Dataset.values`` are read-only float64 views (inside the sandbox each
column is read from the input file the first time it is touched, :func:`decode_lazy`);
``sensor_type``, ``location`` and ``device`` are categorical columns (codes plus labels).

Aggregations over ``values`` are methods of the dataset (and of each group from
:meth:`Dataset.split`): ``count()``, ``sum()``, ``mean()``, ``min()``, ``max()``,
``percentile(q)``, ``percentiles(qs)`` and ``summary()``. For a dataset decoded from the
input, ``sum``, ``mean``, ``min``, ``max`` and ``summary`` read the column statistics the host
computed natively when it laid out the blob (``"stats"`` in the dataset's metadata; numpy's
pairwise sum): constant time, no pass over the readings inside the sandbox. Without them (a
group from :meth:`Dataset.split`, a column holding NaN or an infinity, ``values`` replaced by
the function) each runs as one pass of C code over the view (``sum``, ``min``, ``max``): no
Python loop per reading. ``sum`` and ``mean`` then use the built-in ``sum``, which is
compensated (Neumaier) from Python 3.12 on, as in the sandbox; on an older host Python they
use ``math.fsum`` instead (exactly rounded; the sandbox's ``math.fsum`` is about 3x slower
than its ``sum``). Percentiles interpolate linearly
between the two nearest readings, as ``numpy.percentile`` does by default: one near either end
(within 1/16 of the readings) takes a heap pass (``heapq``), any other sorts the values once
per dataset (then cached).

The input blob (format FDS1, little-endian) is documented in ``docs/functions.md``::

    0   b"FDS1"        4   u32 version (1)     8   u32 dataset count
    12  u32 meta offset 16  u32 meta length    20  u32 reserved
    24  per dataset, 6 x u32: rows, ts, value, sensor_type, location, device offsets
    meta: UTF-8 JSON {"params": {...}, "inputs": {...},
          "datasets": [{"name", "labels", "units", "stats": {"sum", "min", "max"} (optional)}]}
    columns: ts and value are f64, the categorical columns u16 codes; each 8-byte aligned.
"""

from __future__ import annotations

import heapq
import json
import math
import struct
import sys
from collections.abc import Iterable
from typing import Any

MAGIC = b"FDS1"
VERSION = 1
HEADER = struct.Struct("<4sIIIII")
ENTRY = struct.Struct("<IIIIII")
CATEGORICAL = ("sensor_type", "location", "device")

#: the fastest accurate float sum here: the built-in is compensated from Python 3.12 on
_sum = sum if sys.version_info >= (3, 12) else math.fsum
#: a percentile this close to either end (fraction of the readings) avoids the full sort
_HEAP_FRACTION = 16

#: how an input that was skipped (a pipeline stage that did not run) travels in the meta
SKIPPED_KEY = "__fades_skipped__"

__all__ = ["SKIPPED_KEY", "ColumnReader", "Dataset", "Skipped", "decode", "decode_lazy"]


class Skipped:
    """The input of an upstream pipeline stage that did not run (its node was down and the
    stage's failover is ``skip``, or its guard was false). It is falsy; ``reason`` says why."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"Skipped({self.reason!r})"


def _input(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1 and SKIPPED_KEY in value:
        return Skipped(str(value[SKIPPED_KEY]))
    return value


class ColumnReader:
    """Reads single columns of an FDS1 input file on first use (the runtime's reader).

    A column is read with one buffered ``read`` straight into a new, read-only ``bytes``
    (one pass over fresh memory), so a function pays only for the columns it touches.
    ``spent`` accumulates the seconds spent reading (the runtime reports them as transfer).
    After :meth:`close` a column not yet read can no longer be read (the runtime first reads
    every column of the datasets a function kept).
    """

    __slots__ = ("_clock", "_f", "spent")

    def __init__(self, f: Any, clock: Any = None) -> None:
        self._f = f
        self._clock = clock
        self.spent = 0.0

    def read(self, offset: int, nbytes: int) -> bytes:
        f = self._f
        if f is None:
            raise ValueError("the input of an earlier invocation is gone (column not read)")
        t0 = self._clock() if self._clock is not None else 0.0
        f.seek(offset)
        data = f.read(nbytes)
        if len(data) != nbytes:
            raise OSError(f"input ended after {len(data)} of {nbytes} column bytes")
        if self._clock is not None:
            self.spent += self._clock() - t0
        return bytes(data)

    def close(self) -> None:
        f, self._f = self._f, None
        if f is not None:
            f.close()


_COLUMN_FORMAT = {"ts": ("d", 8), "values": ("d", 8)}


class Dataset:
    """One named dataset: parallel columns over the same readings."""

    __slots__ = (
        "__weakref__", "_codes", "_pending", "_reader", "_rows", "_sorted", "_stats", "_ts",
        "_values", "labels", "name", "units",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        ts: Any,
        values: Any,
        codes: dict[str, Any],
        labels: dict[str, list[str]],
        units: dict[str, str],
        stats: dict[str, float] | None = None,
    ) -> None:
        self.name = name
        self._ts = ts
        self._values = values
        self._codes = codes
        self.labels = labels
        self.units = units
        self._sorted: list[float] | None = None
        self._rows = -1 if ts is None else len(ts)
        #: columns not read yet: name -> byte offset in the reader's input (lazy datasets)
        self._pending: dict[str, int] = {}
        self._reader: ColumnReader | None = None
        # the host's statistics of ``values`` (sum, min, max); dropped if values is replaced
        self._stats: tuple[float, float, float] | None = None
        if stats is not None:
            self._stats = (float(stats["sum"]), float(stats["min"]), float(stats["max"]))

    @classmethod
    def lazy(
        cls,
        name: str,
        rows: int,
        offsets: dict[str, int],
        reader: ColumnReader,
        labels: dict[str, list[str]],
        units: dict[str, str],
        stats: dict[str, float] | None = None,
    ) -> Dataset:
        """A dataset whose columns (``ts``, ``values`` and the categorical ones, at
        ``offsets`` in the reader's input) are read on first use."""
        ds = cls(name, None, None, {}, labels, units, stats if rows else None)
        ds._rows, ds._pending, ds._reader = rows, dict(offsets), reader
        return ds

    def _column(self, key: str) -> Any:
        off = self._pending.pop(key)
        fmt, width = _COLUMN_FORMAT.get(key, ("H", 2))
        assert self._reader is not None
        raw: Any = memoryview(self._reader.read(off, width * self._rows))
        view = raw.cast(fmt)
        if key == "ts":
            self._ts = view
        elif key == "values":
            self._values = view
        else:
            self._codes[key] = view
        if not self._pending:
            self._reader = None
        return view

    def load(self) -> None:
        """Read every column not read yet (the runtime does it for datasets a function keeps
        beyond its invocation, before that input goes away)."""
        for key in list(self._pending):
            self._column(key)

    @property
    def ts(self) -> Any:
        """Epoch seconds of each reading (float64 view)."""
        return self._column("ts") if "ts" in self._pending else self._ts

    @ts.setter
    def ts(self, value: Any) -> None:
        self._pending.pop("ts", None)
        self._ts = value

    @property
    def values(self) -> Any:
        """The value of each reading (float64 view)."""
        return self._column("values") if "values" in self._pending else self._values

    @values.setter
    def values(self, value: Any) -> None:
        self._pending.pop("values", None)
        self._values, self._stats, self._sorted = value, None, None

    def __len__(self) -> int:
        return self._rows if self._rows >= 0 else len(self.ts)

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, rows={len(self)})"

    def codes(self, column: str) -> Any:
        """The u16 code of each reading in a categorical column."""
        return self._column(column) if column in self._pending else self._codes[column]

    def column(self, column: str) -> list[str]:
        """The label of each reading in a categorical column (``sensor_type`` ...)."""
        lab = self.labels[column]
        return [lab[c] for c in self.codes(column)]

    # --- aggregations over ``values`` (one C-level pass each) -------------------------------
    def _n(self) -> int:
        """Number of values, without reading a column not read yet."""
        return self._rows if "values" in self._pending else len(self._values)

    def count(self) -> int:
        """Number of readings."""
        return self._n()

    def _known(self) -> tuple[float, float, float] | None:
        """The host's statistics of ``values`` (None once ``values`` was replaced)."""
        return self._stats if self._n() else None

    def sum(self) -> float:
        """Sum of the values; 0.0 when empty."""
        st = self._known()
        return st[0] if st is not None else float(_sum(self.values))

    def mean(self) -> float:
        """Arithmetic mean (as ``statistics.fmean``, to rounding). ValueError when empty."""
        n = self._n()
        if n == 0:
            raise ValueError(f"mean of dataset {self.name!r}: it holds no readings")
        return self.sum() / n

    def min(self) -> float:
        """Smallest value. ValueError when empty."""
        self._nonempty("min")
        st = self._known()
        return st[1] if st is not None else float(min(self.values))

    def max(self) -> float:
        """Largest value. ValueError when empty."""
        self._nonempty("max")
        st = self._known()
        return st[2] if st is not None else float(max(self.values))

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0..100), linear between the two nearest readings (as
        ``numpy.percentile``). The first call sorts the values once; later ones reuse it."""
        return self.percentiles([q])[0]

    def percentiles(self, qs: Iterable[float]) -> list[float]:
        """Several percentiles from one sort (see :meth:`percentile`)."""
        ranks = [float(q) for q in qs]
        for q in ranks:
            if not 0.0 <= q <= 100.0:  # also refuses NaN
                raise ValueError(f"a percentile is from 0 to 100, not {q!r}")
        self._nonempty("percentile")
        n = len(self.values)
        top = n - 1
        edge = max(1, n // _HEAP_FRACTION)
        spots = []
        for q in ranks:
            pos = top * q / 100.0
            lo = int(pos)
            spots.append((lo, min(lo + 1, top), pos - lo))
        if self._sorted is None and any(edge <= hi and n - lo > edge for lo, hi, _ in spots):
            self._sorted = sorted(self.values)
        out = []
        for lo, hi, frac in spots:
            a, b = self._ranked(lo, hi, edge)
            out.append(a + (b - a) * frac)
        return out

    def _ranked(self, lo: int, hi: int, edge: int) -> tuple[float, float]:
        """The values of rank ``lo`` and ``hi`` (0: smallest)."""
        s = self._sorted
        if s is not None:
            return s[lo], s[hi]
        if hi < edge:
            small = heapq.nsmallest(hi + 1, self.values)
            return small[lo], small[hi]
        n = len(self.values)
        big = heapq.nlargest(n - lo, self.values)  # big[i] has rank n - 1 - i
        return big[n - 1 - lo], big[n - 1 - hi]

    def summary(self) -> dict[str, float | int]:
        """``{"count", "mean", "min", "max"}`` of the values (no sort)."""
        n = self._n()
        if n == 0:
            return {"count": 0}
        return {"count": n, "mean": self.mean(), "min": self.min(), "max": self.max()}

    def _nonempty(self, what: str) -> None:
        if self._n() == 0:
            raise ValueError(f"{what} of dataset {self.name!r}: it holds no readings")

    def split(self, *columns: str) -> dict[tuple[str, ...], Dataset]:
        """Split into one dataset per distinct combination of categorical ``columns``.

        >>> groups = data["all"].split("location", "sensor_type")
        >>> groups[("room1", "temperature")].values
        """
        import array

        cols = columns or ("location", "sensor_type")
        keys = list(zip(*(self.codes(c) for c in cols), strict=True))
        index: dict[tuple[int, ...], list[int]] = {}
        for i, k in enumerate(keys):
            index.setdefault(k, []).append(i)
        out: dict[tuple[str, ...], Dataset] = {}
        ts_col, val_col = self.ts, self.values
        cc = {c: self.codes(c) for c in CATEGORICAL}
        for k, rows in index.items():
            label = tuple(self.labels[c][code] for c, code in zip(cols, k, strict=True))
            ts = array.array("d", (ts_col[i] for i in rows))
            vals = array.array("d", (val_col[i] for i in rows))
            codes = {c: array.array("H", (cc[c][i] for i in rows)) for c in CATEGORICAL}
            out[label] = Dataset(self.name, ts, vals, codes, self.labels, self.units)
        return out


def decode(blob: bytes | bytearray | memoryview) -> tuple[dict[str, Any], dict[str, Any]]:
    """Decode an FDS1 input blob into ``(data, params)`` without copying columns.

    ``data`` maps each dataset's name to a :class:`Dataset` and each inline input's name to
    its JSON value (a :class:`Skipped` for a skipped pipeline input).
    """
    mv = memoryview(blob)
    if len(mv) < HEADER.size:
        raise ValueError("input blob too short for an FDS1 header")
    magic, version, count, meta_off, meta_len, _ = HEADER.unpack_from(mv, 0)
    if magic != MAGIC or version != VERSION:
        raise ValueError(f"not an FDS1 v{VERSION} blob (magic {magic!r}, version {version})")
    meta = json.loads(bytes(mv[meta_off : meta_off + meta_len]))
    if len(meta["datasets"]) != count:
        raise ValueError(
            f"FDS1 header lists {count} datasets, its metadata {len(meta['datasets'])}"
        )
    datasets: dict[str, Any] = {}
    for i, info in enumerate(meta["datasets"]):
        rows, ts_off, val_off, st_off, loc_off, dev_off = ENTRY.unpack_from(
            mv, HEADER.size + i * ENTRY.size
        )
        codes = {
            c: mv[off : off + 2 * rows].cast("H")
            for c, off in zip(CATEGORICAL, (st_off, loc_off, dev_off), strict=True)
        }
        datasets[info["name"]] = Dataset(
            info["name"],
            mv[ts_off : ts_off + 8 * rows].cast("d"),
            mv[val_off : val_off + 8 * rows].cast("d"),
            codes,
            info["labels"],
            info.get("units", {}),
            info.get("stats"),
        )
    for name, value in meta.get("inputs", {}).items():
        datasets[name] = _input(value)
    return datasets, meta.get("params", {})


def decode_lazy(reader: ColumnReader) -> tuple[dict[str, Any], dict[str, Any]]:
    """Like :func:`decode`, from an FDS1 input file: only the header and the metadata are
    read now; each column is read the first time the function touches it."""
    head = reader.read(0, HEADER.size)
    magic, version, count, meta_off, meta_len, _ = HEADER.unpack_from(head, 0)
    if magic != MAGIC or version != VERSION:
        raise ValueError(f"not an FDS1 v{VERSION} blob (magic {magic!r}, version {version})")
    entries = reader.read(HEADER.size, ENTRY.size * count)
    meta = json.loads(reader.read(meta_off, meta_len))
    if len(meta["datasets"]) != count:
        raise ValueError(
            f"FDS1 header lists {count} datasets, its metadata {len(meta['datasets'])}"
        )
    datasets: dict[str, Any] = {}
    for i, info in enumerate(meta["datasets"]):
        rows, *offsets = ENTRY.unpack_from(entries, i * ENTRY.size)
        keys = ("ts", "values", *CATEGORICAL)
        datasets[info["name"]] = Dataset.lazy(
            info["name"], rows, dict(zip(keys, offsets, strict=True)), reader,
            info["labels"], info.get("units", {}), info.get("stats"),
        )  # fmt: skip
    for name, value in meta.get("inputs", {}).items():
        datasets[name] = _input(value)
    return datasets, meta.get("params", {})
