"""Helpers shared by the single-node benchmarks (``bench_cold_start.py``, ``bench_transfer.py``,
``bench_mean.py``, ``bench_throughput.py``, ``bench_memory.py``, ``bench_artifacts.py``) and
``bench_ingest.py``: statistics, synthetic data sets, the artifacts and sandboxes every
single-node benchmark uses (:class:`Bench`), the command line and the result files.

Every figure is measured against a baseline taken in the same run (the machine is shared and
noisy), and reported as medians/percentiles over repetitions. Each benchmark writes
``results/single_node_<name>.json`` (with a ``meta`` block: machine, load, wall time) and its
PNG, in ``benchmarks/results`` or ``$FADES_BENCH_RESULTS``. Not a benchmark itself
(``run_all.py`` runs ``bench_*.py`` only).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import numpy as np

from fades.broker.base import CATEGORICAL, Dataset
from fades.functions.artifact import Artifact
from fades.functions.build import build_core, build_python, build_runtime
from fades.functions.keys import SigningKey
from fades.sandbox.core import CoreSandbox
from fades.sandbox.python import PythonSandbox

ROOT = Path(__file__).resolve().parents[1]

RESULTS = Path(os.environ.get("FADES_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")

EXAMPLES = ROOT / "examples" / "functions"

MB = 1_000_000

MIB = 1 << 20

BYTES_PER_READING = 8 + 8 + 2 * len(CATEGORICAL)  # ts, value, three u16 codes

SEED_UNIKERNEL_BYTES = 5_000_000  # ECCO: a unikernel EF image was about 5 MB

MEAN_SRC = '''"""Mean of the first dataset's values (the benchmark's aggregation)."""


def main(data, params):
    v = next(iter(data.values())).values
    return {"mean": sum(v) / len(v), "count": len(v)}
'''

LEN_SRC = '''"""Reads its input and reports its size: transfer without compute."""


def main(data, params):
    return len(next(iter(data.values())))
'''

NOOP_SRC = '''"""Does nothing (cold-start probe)."""


def main(data, params):
    return 0
'''


def pct(xs: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=float), q))


def summary(xs: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """p50/p10/p90/min/max of ``xs`` times ``scale``."""
    return {
        "p50": pct(xs, 50) * scale,
        "p10": pct(xs, 10) * scale,
        "p90": pct(xs, 90) * scale,
        "min": min(xs) * scale,
        "max": max(xs) * scale,
        "n": len(xs),
    }


def verdict(value: float, target: float, *, higher_is_better: bool) -> dict[str, Any]:
    """Whether ``value`` meets ``target``; ``factor`` > 1 means by how much it misses."""
    met = value >= target if higher_is_better else value <= target
    factor = target / value if higher_is_better else value / target
    return {"target": target, "value": value, "met": met, "factor_vs_target": factor}


def dataset(n: int, seed: int = 1) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset(
        ts=np.arange(n, dtype=np.float64) + 1.7e9,
        value=rng.normal(21.0, 2.0, n),
        codes={c: np.zeros(n, np.uint16) for c in CATEGORICAL},
        labels={c: ["x"] for c in CATEGORICAL},
        units={"x": "C"},
    )


def head(ds: Dataset, n: int) -> Dataset:
    """The first ``n`` readings of ``ds`` (numpy views: no copy until encoding)."""
    return Dataset(
        ts=ds.ts[:n],
        value=ds.value[:n],
        codes={c: ds.codes[c][:n] for c in CATEGORICAL},
        labels=ds.labels,
        units=ds.units,
    )


def fades_from(src: str) -> list[str]:
    """The command that runs ``python -m fades`` from the source tree ``src`` (an older
    version's ``src`` for same-run before/after comparisons)."""
    import sys

    return ["env", f"PYTHONPATH={src}", sys.executable, "-m", "fades"]


def readings_for_bytes(nbytes: int) -> int:
    return max(1, nbytes // BYTES_PER_READING)


def log(msg: str) -> None:
    print(msg, flush=True)


class Bench:
    """Artifacts and sandboxes shared by every section."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.key = SigningKey.generate("bench")
        t0 = time.perf_counter()
        self.runtime = build_runtime(key=self.key)
        self.runtime_build_s = time.perf_counter() - t0
        src = tmp / "src"
        src.mkdir()
        for name, text in (("bench_mean", MEAN_SRC), ("bench_len", LEN_SRC), ("noop", NOOP_SRC)):
            (src / f"{name}.py").write_text(text)
        self.py_mean = build_python(src / "bench_mean.py", key=self.key)
        self.py_len = build_python(src / "bench_len.py", key=self.key)
        self.py_noop = build_python(src / "noop.py", key=self.key)
        self.core_mean = build_core(EXAMPLES / "mean_core.wat", key=self.key)
        self.python = PythonSandbox(self.runtime)
        self.core = CoreSandbox()
        t0 = time.perf_counter()
        self.python.warm()
        self.runtime_load_s = time.perf_counter() - t0

    def sandbox(self, art: Artifact) -> PythonSandbox | CoreSandbox:
        return self.core if art.kind == "core" else self.python


def _human(n: float) -> str:
    for unit, div in (("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n:.0f} B"


def parse_args(doc: str, argv: list[str] | None) -> bool:
    """The common command line: ``--quick`` (fewer repetitions, smaller sizes)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, smaller sizes")
    return bool(ap.parse_args(argv).quick)


@contextlib.contextmanager
def session(quick: bool) -> Iterator[tuple[Bench, dict[str, Any]]]:
    """A :class:`Bench` in a temporary folder, and the ``meta`` block of the result."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fades-bench-") as tmp:
        b = Bench(Path(tmp))
        meta: dict[str, Any] = {
            "quick": quick,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load_avg_start": os.getloadavg(),
            "runtime_build_or_cache_s": b.runtime_build_s,
        }
        yield b, meta
    meta["load_avg_end"] = os.getloadavg()
    meta["wall_s"] = time.perf_counter() - t0


def write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")
    return path


def write_result(name: str, res: dict[str, Any], meta: dict[str, Any]) -> Path:
    """``results/single_node_<name>.json``: the benchmark's result with its ``meta``."""
    return write_json(RESULTS / f"single_node_{name}.json", {"meta": meta, name: res})
