"""A synthetic winter road: lampposts with road-weather sensors and black-ice ground truth.

The road has ``segments`` segments (``seg1`` ..) of ``lampposts`` lampposts each; a lamppost
is a location named ``seg<i>-lamp<j>`` (:func:`segment_of` gives its segment back). Every
lamppost carries four sensors:

* ``air_temp`` (°C): a daily mean and amplitude that drift from day to day (interpolated
  between noons, so there is no jump at midnight), coldest before dawn, plus a per-segment
  offset (a hollow or a bridge is colder) and slow weather noise;
* ``humidity`` (%, relative): a day's air mass (dry or moist) that rises as the air cools;
* ``dew_point`` (°C): computed from the two with the Magnus formula, as a road-weather
  station does (so its noise follows theirs);
* ``surface_temp`` (°C): the air temperature, warmed by the sun by day and cooled by
  radiation at night under a clear sky (more on exposed segments), through the lag of the
  road's heat capacity, so it ramps into and out of every cold spell.

A lamppost is **icing** in a minute when its (noise-free) surface is at or below 0 °C and at
or below the air's dew point (frost or black ice forms). An *episode* is a run of icing
minutes (runs less than :data:`MERGE_GAP_S` apart merged, shorter than :data:`MIN_EPISODE_S`
dropped: the surface hovering at the dew point is one episode, not twenty); a segment is
icing when at least half of its lampposts are.
:meth:`RoadSim.truth` lists both, and :func:`write_truth` stores them as JSON beside the
readings. Everything is deterministic for a seed (and the other arguments).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from scipy.signal import lfilter, lfilter_zi

from fades.errors import DatasetError
from fades.testbed.generator import SensorSeries

if TYPE_CHECKING:
    from fades.broker.connectors.sqlite import SQLiteConnector

F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

DAY = 86_400.0
ROAD_UNITS: dict[str, str] = {
    "surface_temp": "°C",
    "air_temp": "°C",
    "humidity": "%",
    "dew_point": "°C",
}
ROAD_SENSOR_TYPES: tuple[str, ...] = tuple(ROAD_UNITS)
#: the ground-truth file written beside a node's readings.db
TRUTH_FILE = "road_truth.json"
MAX_LAMPPOSTS = 1000

_MAGNUS_B, _MAGNUS_C = 17.62, 243.12


def dew_point(temp: F64 | float, rh: F64 | float) -> F64:
    """Dew point (°C) of air at ``temp`` (°C) and relative humidity ``rh`` (%), Magnus."""
    t = np.asarray(temp, np.float64)
    r = np.clip(np.asarray(rh, np.float64), 1.0, 100.0)
    gamma = np.log(r / 100.0) + _MAGNUS_B * t / (_MAGNUS_C + t)
    return np.asarray(_MAGNUS_C * gamma / (_MAGNUS_B - gamma), np.float64)


def lamppost_name(segment: int, lamp: int) -> str:
    return f"seg{segment}-lamp{lamp}"


def segment_of(location: str) -> str:
    """``seg2`` for ``seg2-lamp3`` (the location itself when it is not a lamppost name)."""
    return location.rsplit("-lamp", 1)[0]


def road_layout(segments: int = 3, lampposts: int = 4) -> list[tuple[str, str]]:
    """``(lamppost, segment)`` for every lamppost, segment by segment."""
    if segments < 1 or lampposts < 1 or segments * lampposts > MAX_LAMPPOSTS:
        raise DatasetError(
            f"a road needs >= 1 segment and >= 1 lamppost per segment, at most "
            f"{MAX_LAMPPOSTS} lampposts in all (got {segments} x {lampposts})"
        )
    return [
        (lamppost_name(s, j), f"seg{s}")
        for s in range(1, segments + 1)
        for j in range(1, lampposts + 1)
    ]


def _lag(target: F64, tau_min: float) -> F64:
    a = math.exp(-1.0 / tau_min)
    b, den = [1.0 - a], [1.0, -a]
    y, _ = lfilter(b, den, target, zi=lfilter_zi(b, den) * target[0])
    return np.asarray(y, np.float64)


def _slow_noise(rng: np.random.Generator, n: int, sd: float, tau_min: float) -> F64:
    raw = rng.normal(0.0, 1.0, n)
    y = _lag(raw, tau_min)
    scale = float(np.std(y)) or 1.0
    return np.asarray(y / scale * sd, np.float64)


@dataclass(frozen=True, slots=True)
class LampState:
    """The noise-free state of one lamppost on the minute grid."""

    name: str
    segment: str
    air: F64
    rh: F64
    dew: F64
    surface: F64

    @property
    def icing(self) -> B:
        """Minutes in which the surface is at or below both 0 °C and the dew point."""
        return np.asarray((self.surface <= 0.0) & (self.surface <= self.dew), np.bool_)


#: icing runs closer than this are one episode (the surface hovering at the dew point)
MERGE_GAP_S = 1800.0
#: shorter episodes (after merging) are dropped: a few minutes of frost is not an episode
MIN_EPISODE_S = 900.0


def episodes(
    minutes: F64, flags: B, merge_gap_s: float = MERGE_GAP_S, min_s: float = MIN_EPISODE_S
) -> list[tuple[float, float]]:
    """Runs of true ``flags`` on the minute grid as ``[start, end)`` epoch seconds: maximal
    runs, merged across gaps shorter than ``merge_gap_s``, then those shorter than ``min_s``
    dropped."""
    f = np.concatenate([[False], np.asarray(flags, np.bool_), [False]]).astype(np.int8)
    d = np.diff(f)
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    runs: list[list[float]] = []
    for a, b in zip(starts, ends, strict=True):
        lo, hi = float(minutes[a]), float(minutes[b - 1]) + 60.0
        if runs and lo - runs[-1][1] < merge_gap_s:
            runs[-1][1] = hi
        else:
            runs.append([lo, hi])
    return [(lo, hi) for lo, hi in runs if hi - lo >= min_s]


def in_episodes(ts: F64 | float, eps: Sequence[Sequence[float]]) -> B:
    """Whether each ``ts`` falls inside one of ``eps`` (``[start, end)`` pairs)."""
    t = np.atleast_1d(np.asarray(ts, np.float64))
    out = np.zeros(t.shape, np.bool_)
    for lo, hi in eps:
        out |= (t >= lo) & (t < hi)
    return out


class RoadSim:
    """The simulated road over ``days`` from ``start`` (see the module docstring).

    Args:
        days: length of the period.
        seed: seed of the random generators.
        start: first instant (UTC if naive; default 2026-01-05 00:00 UTC).
        segments, lampposts: the layout (:func:`road_layout`).
    """

    def __init__(
        self,
        days: float = 7.0,
        seed: int = 0,
        start: datetime | None = None,
        *,
        segments: int = 3,
        lampposts: int = 4,
    ) -> None:
        if not (0 < days <= 366):
            raise DatasetError(f"days must be in (0, 366] (got {days})")
        if seed < 0:
            raise DatasetError(f"seed must be >= 0 (got {seed})")
        start = start or datetime(2026, 1, 5, tzinfo=UTC)
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self.seed, self.days, self.start = seed, days, start
        self.layout = road_layout(segments, lampposts)
        self.t0 = start.timestamp()
        n = math.ceil(days * DAY / 60.0) + 1
        self.minutes: F64 = self.t0 + 60.0 * np.arange(n, dtype=np.float64)
        self.lamps: dict[str, LampState] = {}
        self._simulate()

    def _simulate(self) -> None:
        rng = np.random.default_rng([self.seed, 0])
        t = self.minutes
        hour = (t % DAY) / 3600.0
        day0 = math.floor(self.t0 / DAY) - 1
        n_days = math.ceil((t[-1] - self.t0) / DAY) + 3
        noons = (day0 + np.arange(n_days)) * DAY + 43_200.0
        mean_t = rng.normal(1.0, 3.0, n_days)  # winter: daily means around 1 °C
        amp = rng.uniform(2.0, 5.0, n_days)
        clear = rng.uniform(0.0, 1.0, n_days)  # 1: a clear sky (strong night cooling)
        moist = rng.uniform(62.0, 97.0, n_days)  # the air mass's humidity at the daily mean

        def daily(v: F64) -> F64:
            return np.asarray(np.interp(t, noons, v), np.float64)

        t_mean, t_amp, sky, rh0 = daily(mean_t), daily(amp), daily(clear), daily(moist)
        # coldest around 05:00, warmest around 14:00 (a skewed daily curve)
        phase = 2 * np.pi * (hour - 14.0) / 24.0
        shape = np.cos(phase) + 0.25 * np.cos(2 * phase)
        air_road = t_mean + t_amp * shape / 1.25 + _slow_noise(rng, len(t), 0.6, 180.0)
        sun = np.clip(np.sin(np.pi * (hour - 7.5) / 9.0), 0.0, None)  # winter day 7:30-16:30
        night = np.clip(1.0 - 3.0 * sun, 0.0, 1.0)
        segments = sorted({seg for _, seg in self.layout}, key=lambda s: int(s[3:]))
        for s_i, seg in enumerate(segments, start=1):
            srng = np.random.default_rng([self.seed, 1, s_i])
            offset = srng.uniform(-1.2, 0.4)  # a hollow or a bridge is colder
            exposure = srng.uniform(0.8, 1.6)  # how much it radiates on a clear night
            for name, lseg in self.layout:
                if lseg != seg:
                    continue
                lrng = np.random.default_rng([self.seed, 2, s_i, int(name.rsplit("lamp", 1)[1])])
                air = air_road + offset + lrng.normal(0.0, 0.2)
                air = air + _slow_noise(lrng, len(t), 0.15, 60.0)
                rh = np.clip(rh0 - 3.0 * (air - t_mean) + lrng.normal(0.0, 1.0), 20.0, 100.0)
                dew = dew_point(air, rh)
                solar = sun * (1.5 + 4.0 * sky)  # the low winter sun, stronger under a clear sky
                radiative = 3.2 * exposure * night * sky
                surface = _lag(air + solar - radiative + lrng.normal(0.0, 0.15), 45.0)
                self.lamps[name] = LampState(name, seg, air, rh, dew, surface)

    # -- ground truth ---------------------------------------------------------------------------

    def segments(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, seg in self.layout:
            out.setdefault(seg, []).append(name)
        return out

    def segment_icing(self, segment: str) -> B:
        """Minutes in which at least half of the segment's lampposts are icing."""
        names = self.segments()[segment]
        count = np.sum([self.lamps[n].icing for n in names], axis=0)
        return np.asarray(2 * count >= len(names), np.bool_)

    def icing_at(self, name: str, ts: float) -> bool:
        """Whether lamppost (or segment) ``name`` is in an icing episode at ``ts``."""
        flags = self.lamps[name].icing if name in self.lamps else self.segment_icing(name)
        return bool(in_episodes(ts, episodes(self.minutes, flags))[0])

    def truth(self) -> dict[str, Any]:
        """Icing episodes per lamppost and per segment, as ``[start, end)`` epoch seconds."""
        return {
            "definition": "lamppost icing: noise-free surface_temp <= 0 and <= dew_point; "
            "segment icing: at least half of its lampposts icing; episodes: maximal runs "
            "of icing minutes [start, end), merged across gaps under merge_gap_s, "
            "at least min_s long",
            "merge_gap_s": MERGE_GAP_S,
            "min_s": MIN_EPISODE_S,
            "seed": self.seed,
            "start": self.t0,
            "end": float(self.minutes[-1]) + 60.0,
            "lampposts": {
                n: {"segment": s.segment, "episodes": episodes(self.minutes, s.icing)}
                for n, s in self.lamps.items()
            },
            "segments": {
                seg: {
                    "lampposts": names,
                    "episodes": episodes(self.minutes, self.segment_icing(seg)),
                }
                for seg, names in self.segments().items()
            },
        }

    # -- readings -------------------------------------------------------------------------------

    def readings(
        self, rate_s: float = 60.0, lampposts: Sequence[str] | None = None
    ) -> Iterator[SensorSeries]:
        """One :class:`SensorSeries` per (lamppost, sensor type), with sensor noise."""
        if rate_s <= 0:
            raise DatasetError(f"rate_s must be positive (got {rate_s})")
        names = list(self.lamps) if lampposts is None else list(lampposts)
        unknown = [n for n in names if n not in self.lamps]
        if unknown:
            raise DatasetError(
                f"unknown lamppost(s) {', '.join(unknown)}; the road has {list(self.lamps)}"
            )
        grid = np.arange(len(self.minutes), dtype=np.float64)
        span = float(self.minutes[-1] - self.t0)
        for name in names:
            st = self.lamps[name]
            idx = [n for n, _ in self.layout].index(name)
            rng = np.random.default_rng([self.seed, 3, idx])
            phase = float(rng.uniform(0.0, rate_s))
            rel = np.arange(phase, span, rate_s, dtype=np.float64)
            pos = rel / 60.0
            n = len(rel)
            air = np.interp(pos, grid, st.air) + rng.normal(0.0, 0.1, n)
            rh = np.clip(np.interp(pos, grid, st.rh) + rng.normal(0.0, 1.0, n), 1.0, 100.0)
            surface = np.interp(pos, grid, st.surface) + rng.normal(0.0, 0.15, n)
            air, rh = np.round(air, 2), np.round(rh, 1)
            values = {
                "surface_temp": np.round(surface, 2),
                "air_temp": air,
                "humidity": rh,
                "dew_point": np.round(dew_point(air, rh), 2),  # from what the station reports
            }
            for stype in ROAD_SENSOR_TYPES:
                yield SensorSeries(
                    sensor_type=stype,
                    unit=ROAD_UNITS[stype],
                    location=name,
                    device=f"{name}-{stype}-1",
                    ts=self.t0 + rel,
                    value=np.asarray(values[stype], np.float64),
                )


def populate_road(
    store: SQLiteConnector,
    sim: RoadSim,
    rate_s: float = 60.0,
    lampposts: Sequence[str] | None = None,
    *,
    shift_s: float = 0.0,
    until: float | None = None,
) -> int:
    """Write the readings of ``lampposts`` (default: all) into ``store``, replacing what these
    lampposts' sensors held in the period; returns the number of readings written.

    ``shift_s`` moves every timestamp (a replay: the simulated instant ``t`` is stored at
    ``t + shift_s``, e.g. to make an icing episode "now" for a live pipeline); ``until``
    (simulated epoch seconds) leaves out the readings after that instant.
    """
    names = list(sim.lamps) if lampposts is None else list(lampposts)
    store.clear(
        location=names,
        sensor_type=list(ROAD_SENSOR_TYPES),
        start=sim.t0 + shift_s,
        end=float(sim.minutes[-1]) + 60.0 + shift_s,
    )
    done = 0
    for s in sim.readings(rate_s, names):
        keep = (
            slice(None) if until is None else slice(0, int(np.searchsorted(s.ts, until, "right")))
        )
        ts, value = s.ts[keep] + shift_s, s.value[keep]
        done += store.write_columns(ts, value, s.sensor_type, s.location, s.device, s.unit)
    return done


def write_truth(path: str | Path, sim: RoadSim) -> Path:
    """Write :meth:`RoadSim.truth` as JSON to ``path`` (a folder gets :data:`TRUTH_FILE`)."""
    p = Path(path)
    if p.is_dir():
        p = p / TRUTH_FILE
    p.write_text(json.dumps(sim.truth(), indent=1))
    return p


__all__ = [
    "MAX_LAMPPOSTS",
    "MERGE_GAP_S",
    "MIN_EPISODE_S",
    "ROAD_SENSOR_TYPES",
    "ROAD_UNITS",
    "TRUTH_FILE",
    "LampState",
    "RoadSim",
    "dew_point",
    "episodes",
    "in_episodes",
    "lamppost_name",
    "populate_road",
    "road_layout",
    "segment_of",
    "write_truth",
]
