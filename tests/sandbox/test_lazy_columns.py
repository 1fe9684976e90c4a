"""Columns read on first use (fades_sdk.decode_lazy, guest app.run): a function pays only for
the columns it touches, the values match the eager decoder, and a persistent function that
keeps a dataset beyond its invocation still sees that invocation's data, in the real sandbox."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fades.broker.base import CATEGORICAL, Dataset
from fades.errors import FunctionCrashed, MemoryLimitExceeded
from fades.functions.artifact import Artifact, create
from fades.functions.keys import SigningKey
from fades.guest import fades_sdk
from fades.sandbox import Limits, PythonSandbox
from fades.sandbox.wire import encode


def _blob(n: int, scale: float = 2.0) -> bytearray:
    ds = Dataset(
        ts=np.arange(n, dtype=np.float64),
        value=np.arange(n, dtype=np.float64) * scale,
        codes={c: (np.arange(n) % 3).astype(np.uint16) for c in CATEGORICAL},
        labels={c: ["a", "b", "c"] for c in CATEGORICAL},
        units={"a": "C"},
    )
    return encode({"d": ds}, {"k": 1}, {"note": "hi"})


class CountingReader(fades_sdk.ColumnReader):
    __slots__ = ("bytes_read",)

    def __init__(self, f: Any) -> None:
        super().__init__(f)
        self.bytes_read = 0

    def read(self, offset: int, nbytes: int) -> bytes:
        self.bytes_read += nbytes
        return super().read(offset, nbytes)


def test_lazy_decoding_reads_only_the_touched_columns_and_matches_the_eager_one(
    tmp_path: Path,
) -> None:
    n = 50_000
    blob = _blob(n)
    path = tmp_path / "data.fds"
    path.write_bytes(blob)
    eager, eparams = fades_sdk.decode(blob)
    with open(path, "rb") as f:
        reader = CountingReader(f)
        data, params = fades_sdk.decode_lazy(reader)
        assert params == eparams == {"k": 1} and data["note"] == "hi"
        ds = data["d"]
        head = reader.bytes_read
        assert head < 4096 and len(ds) == n and repr(ds) == f"Dataset('d', rows={n})"
        assert ds.mean() == eager["d"].mean() and ds.max() == float(2 * (n - 1))
        assert reader.bytes_read == head  # the statistics travel in the metadata
        assert list(ds.values) == list(eager["d"].values)
        assert reader.bytes_read == head + 8 * n  # one column, read once
        assert ds.values[3] == 6.0 and reader.bytes_read == head + 8 * n
        assert ds.column("location") == eager["d"].column("location")
        assert reader.bytes_read == head + 10 * n
        groups = ds.split("location")
        assert {k: g.count() for k, g in groups.items()} == {
            k: g.count() for k, g in eager["d"].split("location").items()
        }
        assert reader.bytes_read == head + 22 * n  # every column once, no more
        assert ds.values.readonly and ds.codes("device").readonly


STATEFUL = """
import fades_sdk

kept = []

def main(data, params):
    ds = data["d"]
    if not kept:
        fades_sdk.Dataset.load = lambda self: 1 / 0  # the runtime's own copy is bound
        kept.append(ds)  # nothing read yet: the runtime reads it before the input goes
        return {"first": True, "pending": sorted(ds._pending)}
    old = kept[0]
    return {"old_sum": sum(old.values), "old_ts_last": old.ts[-1], "new_sum": sum(ds.values),
            "old_codes": list(old.codes("device"))[:4]}
"""


def test_a_kept_dataset_keeps_its_own_invocations_data_in_a_persistent_session(
    runtime_artifact: Artifact, signing_key: SigningKey
) -> None:
    art = create("python", "keeper", textwrap.dedent(STATEFUL).lstrip().encode(), key=signing_key)
    first, second = _blob(1000, 2.0), _blob(50, 5.0)
    with PythonSandbox(runtime_artifact).open(art, Limits(64, 20_000)) as s:
        r1 = s.invoke(first)
        assert r1.value == {"first": True, "pending": sorted(["ts", "values", *CATEGORICAL])}
        r2 = s.invoke(second)
    assert r2.value == {
        "old_sum": 2.0 * sum(range(1000)), "old_ts_last": 999.0,
        "new_sum": 5.0 * sum(range(50)), "old_codes": [0, 1, 2, 0],
    }  # fmt: skip


ONLY_MEAN = """
def main(data, params):
    ds = data["d"]
    return {"mean": ds.mean(), "n": len(ds), "unread": sorted(ds._pending)}
"""

EVERY_COLUMN = """
def main(data, params):
    ds = data["d"]
    cols = [ds.ts, ds.values] + [ds.codes(c) for c in ("sensor_type", "location", "device")]
    return {"bytes": sum(c.nbytes for c in cols), "unread": sorted(ds._pending)}
"""


def test_in_the_sandbox_a_function_reads_only_what_it_touches_and_next_tasks_run(
    runtime_artifact: Artifact, signing_key: SigningKey
) -> None:
    sb = PythonSandbox(runtime_artifact)
    n = 100_000
    blob = _blob(n)
    mean = create("python", "mean", ONLY_MEAN.lstrip().encode(), key=signing_key)
    every = create("python", "every", EVERY_COLUMN.lstrip().encode(), key=signing_key)
    r = sb.run(mean, blob, Limits(64, 20_000))
    assert r.value == {
        "mean": float(n - 1),
        "n": n,
        "unread": sorted(["ts", "values", *CATEGORICAL]),
    }
    r = sb.run(every, blob, Limits(64, 20_000))
    assert r.value == {"bytes": 22 * n, "unread": []}
    assert r.bytes_in == len(blob) and r.timing["transfer"] > 0


BREAKS_ITS_READER = """
def main(data, params):
    ds = data["d"]
    ds._reader.close()
    return sum(ds.values)
"""

TOUCH_ALL = "def main(data, params):\n    return sum(data['d'].values) + data['d'].ts[-1]\n"
TOUCH_NONE = "def main(data, params):\n    return [len(data['d']), data['d'].max()]\n"


def test_a_function_that_breaks_its_reader_or_outgrows_its_cap_fails_alone(
    runtime_artifact: Artifact, signing_key: SigningKey
) -> None:
    sb = PythonSandbox(runtime_artifact)
    broken = create("python", "broken", BREAKS_ITS_READER.lstrip().encode(), key=signing_key)
    every = create("python", "all", TOUCH_ALL.encode(), key=signing_key)
    none = create("python", "none", TOUCH_NONE.encode(), key=signing_key)
    with pytest.raises(FunctionCrashed, match="input of an earlier invocation is gone"):
        sb.run(broken, _blob(1000), Limits(64, 20_000))
    n = 1_500_000  # 33 MB of columns under a 24 MiB cap
    big = _blob(n)
    with pytest.raises(MemoryLimitExceeded):
        sb.run(every, big, Limits(24, 60_000))
    # the columns a function does not touch never enter its memory
    assert sb.run(none, big, Limits(24, 60_000)).value == [n, 2.0 * (n - 1)]
    assert sb.run(every, _blob(10), Limits(64, 20_000)).value == 99.0
