"""How well the black-ice functions find the road testbed's icing episodes, natively.

:func:`evaluate_native` slides over a :class:`~fades.testbed.road.RoadSim` every ``step_s``:
at each instant each lamppost's detection function (``ice_detect``) runs on that lamppost's
last ``window_s`` of readings, as a lamppost node would, and the fusion function
(``ice_fuse``) runs on all their detections, as the pipeline's gathering stage would. Each
decision is scored against the ground truth at that instant (in an episode or not), giving
precision, recall and F1 per lamppost and per segment, and the delay from each segment
episode's start to its first fused detection.

The functions run in process through the same input encoding as in a sandbox (FDS1 encode,
then the SDK's decoder), so this is the native baseline of the pipeline's accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fades.broker.base import Dataset
from fades.guest import fades_sdk
from fades.sandbox.wire import encode
from fades.testbed.road import RoadSim, episodes, in_episodes

Fn = Callable[[Any, Any], Any]

#: the example functions (repository checkout)
EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "functions"


def load_function(name: str, folder: Path | None = None) -> Fn:
    """``main`` of ``<folder>/<name>.py`` (default: the repository's examples/functions)."""
    path = (folder or EXAMPLES) / f"{name}.py"
    ns: dict[str, Any] = {"__name__": f"fades_fn_{name}"}
    exec(compile(path.read_text(), str(path), "exec"), ns)
    fn: Fn = ns["main"]
    return fn


def call_native(
    fn: Fn,
    datasets: Mapping[str, Dataset] | None = None,
    params: Mapping[str, Any] | None = None,
    inputs: Mapping[str, Any] | None = None,
) -> Any:
    """Run ``fn`` as a sandbox would see its input: FDS1-encoded, decoded by the SDK."""
    data, p = fades_sdk.decode(encode(datasets or {}, params, inputs))
    return fn(data, p)


@dataclass
class Score:
    """A confusion matrix and what follows from it."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, predicted: bool, real: bool) -> None:
        if predicted and real:
            self.tp += 1
        elif predicted:
            self.fp += 1
        elif real:
            self.fn += 1
        else:
            self.tn += 1

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        return (
            2 * p * r / (p + r) if p and r else (0.0 if p is not None and r is not None else None)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
        }


@dataclass
class Accuracy:
    """The scores of one evaluation."""

    lampposts: dict[str, Score] = field(default_factory=dict)
    segments: dict[str, Score] = field(default_factory=dict)
    #: per segment episode: seconds from its start to the first fused detection (None: missed)
    delays: list[float | None] = field(default_factory=list)
    instants: int = 0

    def total(self, which: str) -> Score:
        out = Score()
        for s in (self.lampposts if which == "lampposts" else self.segments).values():
            out.tp, out.fp, out.fn, out.tn = (
                out.tp + s.tp,
                out.fp + s.fp,
                out.fn + s.fn,
                out.tn + s.tn,
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        found = [d for d in self.delays if d is not None]
        return {
            "instants": self.instants,
            "lampposts": {k: v.to_dict() for k, v in self.lampposts.items()},
            "segments": {k: v.to_dict() for k, v in self.segments.items()},
            "lamppost_total": self.total("lampposts").to_dict(),
            "segment_total": self.total("segments").to_dict(),
            "episodes": len(self.delays),
            "episodes_detected": len(found),
            "detection_delay_s_p50": float(np.median(found)) if found else None,
        }


class RoadWindows:
    """A lamppost's readings cut into the window a detection stage would fetch."""

    def __init__(
        self, sim: RoadSim, rate_s: float = 60.0, sensor_types: Sequence[str] = ()
    ) -> None:
        types = set(sensor_types or ("surface_temp", "dew_point"))
        self.series: dict[str, list[tuple[str, Any, Any, str]]] = {}
        for s in sim.readings(rate_s):
            if s.sensor_type in types:
                self.series.setdefault(s.location, []).append(
                    (s.sensor_type, s.ts, s.value, s.unit)
                )

    def window(self, lamp: str, end: float, window_s: float) -> Dataset:
        ts: list[Any] = []
        vals: list[Any] = []
        st: list[str] = []
        units: dict[str, str] = {}
        for stype, t, v, unit in self.series[lamp]:
            lo, hi = np.searchsorted(t, end - window_s), np.searchsorted(t, end, side="right")
            ts.append(t[lo:hi])
            vals.append(v[lo:hi])
            st += [stype] * int(hi - lo)
            units[stype] = unit
        n = len(st)
        return Dataset.from_records(
            np.concatenate(ts), np.concatenate(vals), st, [lamp] * n, [f"{lamp}-dev"] * n, units
        )


def evaluate_native(
    sim: RoadSim,
    *,
    step_s: float = 300.0,
    window_s: float = 900.0,
    rate_s: float = 60.0,
    detect_params: Mapping[str, Any] | None = None,
    functions: Path | None = None,
) -> Accuracy:
    """Score ``ice_detect`` per lamppost and ``ice_fuse`` per segment over the whole period."""
    detect, fuse = load_function("ice_detect", functions), load_function("ice_fuse", functions)
    windows = RoadWindows(sim, rate_s)
    truth = sim.truth()
    lamp_eps = {n: v["episodes"] for n, v in truth["lampposts"].items()}
    seg_eps = {n: v["episodes"] for n, v in truth["segments"].items()}
    acc = Accuracy(lampposts={n: Score() for n in lamp_eps}, segments={n: Score() for n in seg_eps})
    first_hit: dict[str, list[float]] = {s: [] for s in seg_eps}
    params = {"recent_s": 600, **(detect_params or {})}
    for t in np.arange(sim.t0 + window_s, float(sim.minutes[-1]), step_s):
        acc.instants += 1
        found: dict[str, Any] = {}
        for lamp in lamp_eps:
            res = call_native(detect, {"road": windows.window(lamp, float(t), window_s)}, params)
            found[lamp] = res
            acc.lampposts[lamp].add(
                bool(res["lampposts"][lamp]["ice"]), bool(in_episodes(t, lamp_eps[lamp])[0])
            )
        fused = call_native(fuse, inputs={"detect": found})
        for seg, eps in seg_eps.items():
            predicted = bool(fused["segments"].get(seg, {}).get("ice", False))
            acc.segments[seg].add(predicted, bool(in_episodes(t, eps)[0]))
            if predicted:
                first_hit[seg].append(float(t))
    for seg, eps in seg_eps.items():
        hits = np.asarray(first_hit[seg])
        for lo, hi in eps:
            inside = hits[(hits >= lo) & (hits < hi)]
            acc.delays.append(float(inside[0] - lo) if len(inside) else None)
    return acc


__all__ = [
    "EXAMPLES",
    "Accuracy",
    "RoadWindows",
    "Score",
    "call_native",
    "episodes",
    "evaluate_native",
    "load_function",
]
