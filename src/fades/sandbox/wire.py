"""Encode datasets into the FDS1 input blob that functions read (pure code, no I/O).

The decoder lives in :mod:`fades.guest.fades_sdk`, which also runs inside the sandbox. Column
bytes are copied once, straight from the numpy arrays, with no per-element work.

Each dataset's entry in the metadata also carries the statistics of its ``value`` column
(``{"sum", "min", "max"}``), computed here natively with numpy (as Parquet keeps column
statistics beside the data): the SDK's ``sum()``, ``mean()``, ``min()``, ``max()`` and
``summary()`` return them instead of iterating over every reading inside the sandbox, where
the interpreter is several times slower. A column holding NaN or an infinity gets no
statistics (the helpers then compute in the sandbox, as before).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fades.broker.base import CATEGORICAL, Dataset
from fades.guest.fades_sdk import ENTRY, HEADER, MAGIC, VERSION


def _align(n: int) -> int:
    return (n + 7) & ~7


def column_stats(values: np.ndarray[Any, Any]) -> dict[str, float] | None:
    """``{"sum", "min", "max"}`` of a float column (numpy's pairwise sum), or None when it
    is empty or holds a NaN or an infinity."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return None
    with np.errstate(all="ignore"):  # inf - inf: NaN, refused below
        out = {"sum": float(v.sum()), "min": float(v.min()), "max": float(v.max())}
    return out if all(math.isfinite(x) for x in out.values()) else None


def _info(name: str, ds: Dataset, stats_on: bool) -> dict[str, Any]:
    info: dict[str, Any] = {"name": name, "labels": ds.labels, "units": ds.units}
    stats = column_stats(ds.value) if stats_on else None
    if stats is not None:
        info["stats"] = stats
    return info


def encode(
    datasets: Mapping[str, Dataset],
    params: Mapping[str, Any] | None = None,
    inputs: Mapping[str, Any] | None = None,
    *,
    stats: bool = True,
) -> bytearray:
    """Lay out ``datasets``, ``params`` and inline ``inputs`` (JSON values) as one FDS1 blob
    (``stats``: with each value column's statistics, see the module's docstring)."""
    meta = json.dumps(
        {
            "params": dict(params or {}),
            "inputs": dict(inputs or {}),
            "datasets": [_info(name, ds, stats) for name, ds in datasets.items()],
        },
        separators=(",", ":"),
    ).encode()
    count = len(datasets)
    meta_off = HEADER.size + ENTRY.size * count
    cursor = _align(meta_off + len(meta))
    entries: list[tuple[int, ...]] = []
    layout: list[tuple[int, bytes | memoryview]] = []
    for ds in datasets.values():
        offsets = []
        columns: list[np.ndarray[Any, Any]] = [ds.ts, ds.value, *(ds.codes[c] for c in CATEGORICAL)]
        for raw_col in columns:
            col = np.ascontiguousarray(raw_col)
            offsets.append(cursor)
            layout.append((cursor, col.view(np.uint8).data))
            cursor = _align(cursor + col.nbytes)
        entries.append((len(ds), *offsets))
    blob = bytearray(cursor)
    HEADER.pack_into(blob, 0, MAGIC, VERSION, count, meta_off, len(meta), 0)
    for i, entry in enumerate(entries):
        ENTRY.pack_into(blob, HEADER.size + i * ENTRY.size, *entry)
    blob[meta_off : meta_off + len(meta)] = meta
    for off, raw in layout:
        blob[off : off + len(raw)] = raw
    return blob
