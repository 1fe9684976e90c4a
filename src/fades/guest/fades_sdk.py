"""The fades function SDK: what a function sees of its data.

This module runs in two places: inside the sandbox (bundled into the Python runtime
component) and on the host, where the same decoder runs functions natively for tests and
baselines. It is therefore pure standard library.

A function is a plain Python callable::

    def main(data: dict[str, Dataset], params: dict) -> object:
        temp = data["temperature"]
        return {"mean": sum(temp.values) / len(temp)}

``Dataset.ts`` and ``Dataset.values`` are zero-copy float64 views over the input bytes;
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

__all__ = ["SKIPPED_KEY", "Dataset", "Skipped", "decode"]


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


class Dataset:
    """One named dataset: parallel columns over the same readings."""

    __slots__ = ("_codes", "_sorted", "_stats", "labels", "name", "ts", "units", "values")

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
        self.ts = ts
        self.values = values
        self._codes = codes
        self.labels = labels
        self.units = units
        self._sorted: list[float] | None = None
        # the host's statistics of ``values``, valid only for this very column object
        self._stats: tuple[Any, float, float, float] | None = None
        if stats is not None and len(values):
            self._stats = (values, float(stats["sum"]), float(stats["min"]), float(stats["max"]))

    def __len__(self) -> int:
        return len(self.ts)

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, rows={len(self)})"

    def codes(self, column: str) -> Any:
        """The u16 code of each reading in a categorical column."""
        return self._codes[column]

    def column(self, column: str) -> list[str]:
        """The label of each reading in a categorical column (``sensor_type`` ...)."""
        lab = self.labels[column]
        return [lab[c] for c in self._codes[column]]

    # --- aggregations over ``values`` (one C-level pass each) -------------------------------
    def count(self) -> int:
        """Number of readings."""
        return len(self.values)

    def _known(self) -> tuple[Any, float, float, float] | None:
        """The host's statistics, if they describe the current ``values``."""
        st = self._stats
        return st if st is not None and st[0] is self.values else None

    def sum(self) -> float:
        """Sum of the values; 0.0 when empty."""
        st = self._known()
        return st[1] if st is not None else float(_sum(self.values))

    def mean(self) -> float:
        """Arithmetic mean (as ``statistics.fmean``, to rounding). ValueError when empty."""
        n = len(self.values)
        if n == 0:
            raise ValueError(f"mean of dataset {self.name!r}: it holds no readings")
        return self.sum() / n

    def min(self) -> float:
        """Smallest value. ValueError when empty."""
        self._nonempty("min")
        st = self._known()
        return st[2] if st is not None else float(min(self.values))

    def max(self) -> float:
        """Largest value. ValueError when empty."""
        self._nonempty("max")
        st = self._known()
        return st[3] if st is not None else float(max(self.values))

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
        n = len(self.values)
        if n == 0:
            return {"count": 0}
        return {"count": n, "mean": self.mean(), "min": self.min(), "max": self.max()}

    def _nonempty(self, what: str) -> None:
        if len(self.values) == 0:
            raise ValueError(f"{what} of dataset {self.name!r}: it holds no readings")

    def split(self, *columns: str) -> dict[tuple[str, ...], Dataset]:
        """Split into one dataset per distinct combination of categorical ``columns``.

        >>> groups = data["all"].split("location", "sensor_type")
        >>> groups[("room1", "temperature")].values
        """
        import array

        cols = columns or ("location", "sensor_type")
        keys = list(zip(*(self._codes[c] for c in cols), strict=True))
        index: dict[tuple[int, ...], list[int]] = {}
        for i, k in enumerate(keys):
            index.setdefault(k, []).append(i)
        out: dict[tuple[str, ...], Dataset] = {}
        for k, rows in index.items():
            label = tuple(self.labels[c][code] for c, code in zip(cols, k, strict=True))
            ts = array.array("d", (self.ts[i] for i in rows))
            vals = array.array("d", (self.values[i] for i in rows))
            codes = {c: array.array("H", (self._codes[c][i] for i in rows)) for c in CATEGORICAL}
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
