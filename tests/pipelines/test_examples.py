"""The road testbed, the black-ice and building-report functions (natively) and their specs."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fades.broker.base import Dataset
from fades.errors import DatasetError
from fades.functions.modules import check_imports
from fades.pipelines.guard import compile_guard
from fades.pipelines.spec import load_pipeline
from fades.testbed import generate_office
from fades.testbed.road import (
    MERGE_GAP_S,
    MIN_EPISODE_S,
    TRUTH_FILE,
    RoadSim,
    dew_point,
    in_episodes,
    segment_of,
)
from fades.testbed.road_eval import RoadWindows, call_native, evaluate_native, load_function

ROOT = Path(__file__).resolve().parents[2]
JAN = datetime(2026, 1, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def sim() -> RoadSim:
    return RoadSim(4, seed=1, start=JAN)


def test_the_same_seed_gives_the_same_road_and_another_seed_differs() -> None:
    a = list(RoadSim(1, seed=3, start=JAN, segments=2, lampposts=2).readings())
    b = list(RoadSim(1, seed=3, start=JAN, segments=2, lampposts=2).readings())
    c = list(RoadSim(1, seed=4, start=JAN, segments=2, lampposts=2).readings())
    assert len(a) == 2 * 2 * 4
    assert all(np.array_equal(x.value, y.value) for x, y in zip(a, b, strict=True))
    assert any(not np.array_equal(x.value, y.value) for x, y in zip(a, c, strict=True))
    assert (
        RoadSim(1, 3, JAN, segments=2, lampposts=2).truth()
        == RoadSim(1, 3, JAN, segments=2, lampposts=2).truth()
    )


def test_readings_are_physically_plausible(sim: RoadSim) -> None:
    for lamp in sim.lamps.values():
        assert np.all(lamp.dew <= lamp.air + 1e-9)  # relative humidity never above 100 %
        hour = (sim.minutes % 86400) / 3600
        night = (hour >= 1) & (hour < 5)
        day = (hour >= 11) & (hour < 14)
        # the road radiates at night and takes the sun by day
        assert np.mean(lamp.surface[night] - lamp.air[night]) < np.mean(
            lamp.surface[day] - lamp.air[day]
        )
    series = {(s.location, s.sensor_type): s for s in sim.readings(60.0)}
    air = series[("seg1-lamp1", "air_temp")].value
    rh = series[("seg1-lamp1", "humidity")].value
    dp = series[("seg1-lamp1", "dew_point")].value
    assert np.allclose(dp, dew_point(air, rh), atol=0.01)  # a station computes it the same way
    assert series[("seg1-lamp1", "humidity")].unit == "%"


def test_ground_truth_matches_its_definition(sim: RoadSim) -> None:
    truth = sim.truth()
    assert set(truth["lampposts"]) == set(sim.lamps)
    n_eps = 0
    for name, lamp in sim.lamps.items():
        icing = (lamp.surface <= 0) & (lamp.surface <= lamp.dew)
        eps = truth["lampposts"][name]["episodes"]
        n_eps += len(eps)
        inside = in_episodes(sim.minutes, eps)
        # no icing minute outside an episode unless in a run too short to count
        outside = icing & ~inside
        if outside.any():
            runs = np.diff(np.flatnonzero(np.diff(np.r_[0, outside.astype(int), 0])))[::2]
            assert runs.max() * 60 < MIN_EPISODE_S
        for k, (lo, hi) in enumerate(eps):
            assert hi - lo >= MIN_EPISODE_S
            i0, i1 = int((lo - sim.t0) // 60), int((hi - sim.t0) // 60) - 1
            assert icing[i0] and icing[i1]  # starts and ends on an icing minute
            if k:
                assert lo - eps[k - 1][1] >= MERGE_GAP_S
            assert sim.icing_at(name, (lo + hi) / 2)
        assert truth["lampposts"][name]["segment"] == segment_of(name)
    assert n_eps > 0
    for seg, v in truth["segments"].items():
        for lo, _hi in v["episodes"]:
            i0 = int((lo - sim.t0) // 60)
            votes = sum(bool(sim.lamps[n].icing[i0]) for n in v["lampposts"])
            assert 2 * votes >= len(v["lampposts"]), seg


def test_bad_road_arguments_are_named() -> None:
    with pytest.raises(DatasetError, match="segment"):
        RoadSim(1, segments=0)
    with pytest.raises(DatasetError, match="days"):
        RoadSim(0)
    with pytest.raises(DatasetError, match="unknown lamppost"):
        list(RoadSim(1, segments=1, lampposts=1).readings(60.0, ["seg9-lamp1"]))


def test_cli_generates_a_nodes_lampposts_and_the_truth_beside_them(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "fades", "data", "generate", "--testbed", "road", "--days"]
    cmd += ["0.5", "--rate", "120", "--lamp", "seg2-lamp1", "--home", str(tmp_path)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    truth = json.loads((tmp_path / TRUTH_FILE).read_text())
    assert set(truth["segments"]) == {"seg1", "seg2", "seg3"}
    from fades.broker import SQLiteConnector

    store = SQLiteConnector(tmp_path / "readings.db")
    try:
        held = {(s.location, s.sensor_type) for s in store.describe()}
    finally:
        store.close()
    assert held == {
        ("seg2-lamp1", t) for t in ("surface_temp", "air_temp", "humidity", "dew_point")
    }
    bad = subprocess.run(
        [*cmd[:5], "--testbed", "rail", "--home", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0 and "unknown testbed 'rail'" in bad.stderr + bad.stdout


# -- the functions, natively -----------------------------------------------------------------


def _longest(episodes: list[list[float]]) -> list[float]:
    return max(episodes, key=lambda e: e[1] - e[0])


def _detect_all(sim: RoadSim, t: float) -> dict[str, Any]:
    detect = load_function("ice_detect")
    w = RoadWindows(sim)
    return {
        lamp: call_native(detect, {"road": w.window(lamp, t, 900.0)}, {"recent_s": 600})
        for lamp in sim.lamps
    }


def test_ice_is_found_in_an_icing_episode_and_warned(sim: RoadSim) -> None:
    truth = sim.truth()
    seg, info = max(truth["segments"].items(), key=lambda kv: len(kv[1]["episodes"]))
    lo, hi = _longest(info["episodes"])
    t = (lo + hi) / 2
    found = _detect_all(sim, t)
    votes = [found[n]["lampposts"][n]["ice"] for n in info["lampposts"]]
    assert sum(votes) * 2 >= len(votes)
    fused = call_native(load_function("ice_fuse"), inputs={"detect": found})
    assert fused["ice"] is True and seg in fused["iced"]
    assert compile_guard("ice == true").evaluate({"fuse": fused})
    warning = call_native(load_function("ice_warn"), inputs={"fuse": fused}, params={"road": "r7"})
    assert (
        warning["road"] == "r7" and seg in warning["segments"] and "Black ice" in warning["message"]
    )


def test_no_ice_on_a_warm_dry_night(sim: RoadSim) -> None:
    lamp = sim.lamps["seg1-lamp1"]
    hour = (sim.minutes % 86400) / 3600
    warm_dry = (hour >= 1) & (hour < 5) & (lamp.surface > 1.5) & (lamp.rh < 90)
    idx = np.flatnonzero(warm_dry)
    assert len(idx), "the seed has a warm dry night"
    t = float(sim.minutes[idx[len(idx) // 2]])
    found = _detect_all(sim, t)
    assert not found["seg1-lamp1"]["lampposts"]["seg1-lamp1"]["ice"]
    fused = call_native(load_function("ice_fuse"), inputs={"detect": found})
    assert not fused["segments"]["seg1"]["ice"]
    assert not compile_guard("ice == true").evaluate({"fuse": fused}) or fused["segment"] != "seg1"


def test_fusion_lists_a_missing_lamppost_and_fuses_the_rest(sim: RoadSim) -> None:
    lo, hi = _longest(sim.truth()["segments"]["seg1"]["episodes"])
    found: dict[str, Any] = dict(_detect_all(sim, (lo + hi) / 2))
    found["seg1-lamp1"] = {"__fades_skipped__": "node down"}
    fused = call_native(load_function("ice_fuse"), inputs={"detect": found})
    assert fused["missing"] == ["seg1-lamp1"]
    assert fused["segments"]["seg1"]["reporting"] == 3


def test_detection_accuracy_against_the_ground_truth(sim: RoadSim) -> None:
    acc = evaluate_native(sim, step_s=900.0)
    d = acc.to_dict()
    assert d["lamppost_total"]["f1"] > 0.85 and d["segment_total"]["f1"] > 0.85
    assert d["episodes"] > 0 and d["episodes_detected"] == d["episodes"]


def test_building_report_gathers_every_nodes_summary() -> None:
    series = generate_office(1, 60.0, seed=2, start=JAN, sensor_types=["co2"])
    summary, report = load_function("co2_summary"), load_function("co2_report")

    def node_data(rooms: set[str]) -> Dataset:
        picked = [s for s in series if s.location in rooms]
        return Dataset.from_records(
            np.concatenate([s.ts for s in picked]),
            np.concatenate([s.value for s in picked]),
            [s.sensor_type for s in picked for _ in s.ts],
            [s.location for s in picked for _ in s.ts],
            [s.device for s in picked for _ in s.ts],
            {"co2": "ppm"},
        )

    a = call_native(summary, {"co2": node_data({"room1", "room2"})}, {"limit": 800})
    b = call_native(summary, {"co2": node_data({"room3"})}, {"limit": 800})
    assert set(a["rooms"]) == {"room1", "room2"} and a["rooms"]["room1"]["readings"] == 1440
    full = call_native(report, inputs={"summary": {"n1": a, "n2": b}})
    assert set(full["rooms"]) == {"room1", "room2", "room3"} and full["complete"]
    every = np.concatenate([s.value for s in series if s.location in {"room1", "room2", "room3"}])
    assert full["building_mean"] == pytest.approx(float(np.mean(every)), abs=0.2)
    assert full["worst_room"] in full["rooms"]
    part = call_native(report, inputs={"summary": {"n1": a, "n2": {"__fades_skipped__": "x"}}})
    assert (
        part["missing"] == ["n2"]
        and not part["complete"]
        and set(part["rooms"])
        == {
            "room1",
            "room2",
        }
    )


# -- the specs and the functions' imports ----------------------------------------------------


@pytest.mark.parametrize(
    "name", ["ice_detect", "ice_fuse", "ice_warn", "co2_summary", "co2_report"]
)
def test_functions_import_only_what_the_sandbox_has(name: str) -> None:
    path = ROOT / "examples" / "functions" / f"{name}.py"
    check_imports(ast.parse(path.read_text()), where=str(path))


def test_example_specs_parse_with_their_roles() -> None:
    ice = load_pipeline(ROOT / "examples/pipelines/black-ice.yaml")
    assert ice.roles() == {"detect": "start", "fuse": "midsection", "warn": "finale"}
    assert ice.stage("detect").scatter and ice.stage("warn").publish == "warnings.road1"
    assert ice.stage("warn").when == "ice == true"
    report = load_pipeline(ROOT / "examples/pipelines/building-report.yaml")
    assert report.roles() == {"summary": "start", "report": "finale"}
    assert report.stage("summary").scatter and report.stage("report").gather.timeout_s
