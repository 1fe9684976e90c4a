"""The SDK's aggregation helpers (``Dataset.sum/mean/min/max/percentile/count``) agree with
``math.fsum``, ``statistics`` and ``numpy.percentile``: natively on a decoded blob, on the
groups of a split, and inside the real sandbox (real wasmtime, the bundled SDK)."""

from __future__ import annotations

import array
import json
import math
import random
import statistics
import textwrap
from typing import Any

import numpy as np
import pytest

from fades.broker.base import Dataset as HostDataset
from fades.functions.artifact import Artifact, create
from fades.functions.keys import SigningKey
from fades.guest import fades_sdk
from fades.sandbox import Limits, PythonSandbox
from fades.sandbox.wire import encode

QS = [0.0, 1.0, 25.0, 50.0, 90.0, 99.5, 100.0]
EDGE_QS = [0.0, 0.1, 2.0, 98.0, 99.9, 100.0]  # near the ends: a heap pass, no sort

HELPERS = """
def main(data, params):
    out = {}
    for name, ds in data.items():
        out[name] = {
            "count": ds.count(), "sum": ds.sum(), "mean": ds.mean(), "min": ds.min(),
            "max": ds.max(), "p": ds.percentiles(params["qs"]), "p50": ds.percentile(50),
        }
    groups = data["t"].split("location")
    out["groups"] = {k[0]: [g.count(), g.mean(), g.percentile(90)] for k, g in groups.items()}
    return out
"""


def readings(n: int, seed: int) -> tuple[list[float], list[str]]:
    rng = random.Random(seed)
    # wide magnitudes: a naive sum loses digits that fsum keeps
    vals = [rng.gauss(21.0, 2.0) * 10 ** rng.choice([-3, 0, 3, 9]) for _ in range(n)]
    rooms = [rng.choice(["room1", "room2", "room3"]) for _ in range(n)]
    return vals, rooms


def blob_of(vals: list[float], rooms: list[str]) -> bytearray:
    n = len(vals)
    ds = HostDataset.from_records(
        [float(i) for i in range(n)], vals, ["temperature"] * n, rooms, ["d"] * n
    )
    return encode({"t": ds}, {"qs": QS})


def expected(vals: list[float]) -> dict[str, Any]:
    return {
        "count": len(vals),
        "sum": math.fsum(vals),
        "mean": statistics.fmean(vals),
        "min": min(vals),
        "max": max(vals),
        "p": [float(np.percentile(vals, q)) for q in QS],
        "p50": statistics.median(vals),
    }


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9)


def check(got: dict[str, Any], vals: list[float]) -> None:
    want = expected(vals)
    assert got["count"] == want["count"]
    assert close(got["sum"], want["sum"]) and close(got["mean"], want["mean"])
    assert got["min"] == want["min"] and got["max"] == want["max"]
    assert all(close(a, b) for a, b in zip(got["p"], want["p"], strict=True)), (got, want)
    assert close(got["p50"], want["p50"])


def native(blob: bytearray) -> dict[str, Any]:
    ns: dict[str, Any] = {}
    exec(compile(HELPERS, "<helpers>", "exec"), ns)
    data, params = fades_sdk.decode(blob)
    result: dict[str, Any] = ns["main"](data, params)
    return result


@pytest.mark.parametrize("n", [1, 2, 7, 1000])
def test_helpers_agree_with_fsum_statistics_and_numpy_natively(n: int) -> None:
    vals, rooms = readings(n, seed=n)
    got = native(blob_of(vals, rooms))
    check(got["t"], vals)
    for room, (count, mean, p90) in got["groups"].items():
        mine = [v for v, r in zip(vals, rooms, strict=True) if r == room]
        assert count == len(mine) and close(mean, statistics.fmean(mine))
        assert close(p90, float(np.percentile(mine, 90)))


def test_percentiles_near_the_ends_agree_without_a_sort() -> None:
    vals, rooms = readings(5000, seed=9)
    data, _ = fades_sdk.decode(blob_of(vals, rooms))
    ds = data["t"]
    got = [ds.percentile(q) for q in EDGE_QS]
    assert ds._sorted is None  # none of them sorted the values
    assert all(close(a, float(np.percentile(vals, q))) for a, q in zip(got, EDGE_QS, strict=True))
    assert close(ds.percentile(50), statistics.median(vals)) and ds._sorted is not None
    assert ds.percentiles(EDGE_QS) == got


def test_empty_datasets_and_bad_percentiles_say_what_is_wrong() -> None:
    empty = fades_sdk.Dataset("e", [], [], {}, {}, {})
    assert empty.count() == 0 and empty.sum() == 0.0 and empty.summary() == {"count": 0}
    for call in (empty.mean, empty.min, empty.max, lambda: empty.percentile(50)):
        with pytest.raises(ValueError, match="'e': it holds no readings"):
            call()
    ds = fades_sdk.Dataset("x", [0.0, 1.0], [3.0, 1.0], {}, {}, {})
    for q in (-1, 100.5, float("nan")):
        with pytest.raises(ValueError, match="from 0 to 100"):
            ds.percentile(q)
    assert ds.percentile(50) == 2.0 and ds.summary() == {"count": 2, "mean": 2.0, "min": 1.0,
                                                          "max": 3.0}  # fmt: skip


def test_helpers_agree_inside_the_sandbox(
    runtime_artifact: Artifact, signing_key: SigningKey
) -> None:
    vals, rooms = readings(5000, seed=3)
    blob = blob_of(vals, rooms)
    art = create("python", "helpers", textwrap.dedent(HELPERS).lstrip().encode(), key=signing_key)
    res = PythonSandbox(runtime_artifact).run(art, blob, Limits(64, 20_000))
    check(res.value["t"], vals)
    assert res.value["groups"] == native(blob)["groups"]


def test_arriving_datasets_carry_the_hosts_column_statistics() -> None:
    vals, rooms = readings(2000, seed=5)
    blob = blob_of(vals, rooms)
    meta = json.loads(bytes(blob[meta_slice(blob)]))
    stats = meta["datasets"][0]["stats"]
    assert stats == {"sum": float(np.sum(vals)), "min": min(vals), "max": max(vals)}
    data, _ = fades_sdk.decode(blob)
    ds = data["t"]
    assert ds._known() is not None  # the helpers answer from the statistics
    check_basic(ds, vals)
    # a function that replaces the column gets aggregates of its own column, not stale ones
    ds.values = array.array("d", [5.0, -1.0, 2.0])
    assert (ds.sum(), ds.mean(), ds.min(), ds.max()) == (6.0, 2.0, -1.0, 5.0)
    assert ds.summary() == {"count": 3, "mean": 2.0, "min": -1.0, "max": 5.0}


def test_columns_without_statistics_are_aggregated_in_place() -> None:
    vals = [1.0, float("inf"), 3.0]
    blob = blob_of(vals, ["r"] * 3)
    meta = json.loads(bytes(blob[meta_slice(blob)]))
    assert "stats" not in meta["datasets"][0]
    ds = fades_sdk.decode(blob)[0]["t"]
    assert ds._known() is None and ds.max() == float("inf") and ds.min() == 1.0
    empty = encode({"e": HostDataset.from_records([], [], [], [], [])})
    assert "stats" not in json.loads(bytes(empty[meta_slice(empty)]))["datasets"][0]
    # groups of a split are aggregated inside (no statistics travel for them)
    vals, rooms = readings(300, seed=8)
    groups = fades_sdk.decode(blob_of(vals, rooms))[0]["t"].split("location")
    for (room,), g in groups.items():
        mine = [v for v, r in zip(vals, rooms, strict=True) if r == room]
        assert g._known() is None and close(g.mean(), statistics.fmean(mine))


def meta_slice(blob: bytearray) -> slice:
    _, _, _, off, length, _ = fades_sdk.HEADER.unpack_from(blob, 0)
    return slice(off, off + length)


def check_basic(ds: Any, vals: list[float]) -> None:
    assert ds.count() == len(vals) and close(ds.sum(), math.fsum(vals))
    assert close(ds.mean(), statistics.fmean(vals))
    assert ds.min() == min(vals) and ds.max() == max(vals)
    assert ds.summary() == {"count": len(vals), "mean": ds.mean(), "min": min(vals),
                            "max": max(vals)}  # fmt: skip


MEAN_LOOP = "def main(data, params):\n    v = data['t'].values\n    return sum(v) / len(v)\n"
MEAN_HELPER = "def main(data, params):\n    return data['t'].mean()\n"


def test_the_helpers_mean_skips_the_pass_over_a_million_readings_in_the_sandbox(
    runtime_artifact: Artifact, signing_key: SigningKey
) -> None:
    n = 1_000_000
    ds = HostDataset.from_records(
        np.arange(n, dtype=float), np.linspace(-5.0, 40.0, n), ["temperature"] * n,
        ["room1"] * n, ["d"] * n,
    )  # fmt: skip
    blob = encode({"t": ds})
    box = PythonSandbox(runtime_artifact)
    loop = create("python", "loop", MEAN_LOOP.encode(), key=signing_key)
    helper = create("python", "helper", MEAN_HELPER.encode(), key=signing_key)
    lim = Limits(128, 60_000)
    a, b = box.run(loop, blob, lim), box.run(helper, blob, lim)
    assert close(a.value, b.value) and close(b.value, float(np.mean(ds.value)))
    # the loop touches every reading inside the sandbox; the helper reads one number
    assert b.timing["compute"] < 0.1 * a.timing["compute"], (a.timing, b.timing)
