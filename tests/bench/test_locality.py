"""``fades bench locality``: the experiment driver, end to end on tiny payloads.

The capped run needs root (network namespaces, tc); without it only the skip path and the
loopback run are exercised, and the JSON must say why the capped part was skipped.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fades.bench import locality, payloads, report
from fades.bench.link import CappedLink

REASON = CappedLink.check()


def _netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_calibration_hits_the_target_blob_size(tmp_path: Path) -> None:
    db = tmp_path / "readings.db"
    assert payloads.make_node_data(db, 2.0) > 0
    sized = payloads.calibrate(db, [0.5, 2.0])
    for p in sized:
        # within one reading per sensor (22 bytes each) plus column alignment
        assert abs(p.blob_bytes - p.target_bytes) <= 22 * len(payloads.SENSORS) + 64, p
    assert sized[1].readings > 3 * sized[0].readings


def test_segments_add_up_to_the_controller_latency() -> None:
    info = {
        "timing": {"retrieval": 2.0, "transfer": 0.1, "start": 0.2, "compute": 0.3, "latency": 3}
    }
    seg = report.segments(info)
    assert seg["total"] == 3
    assert seg["other"] == pytest.approx(0.4)
    reps = [{"segments": {**seg, "total": t}, "client_wall_s": t + 0.1} for t in (5.0, 1.0, 3.0)]
    assert report.summarise(reps)["total"] == 3.0  # the median repetition


def test_skipped_capped_run_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CappedLink, "check", staticmethod(lambda: "needs root (test)"))
    res = locality.run(
        locality.Settings(sizes_mbit=[0.2], reps=1, out=tmp_path, cap=True, loopback=False)
    )
    saved = json.loads((tmp_path / "locality.json").read_text())
    assert saved["runs"]["capped"] == {"status": "skipped", "reason": "needs root (test)"}
    assert saved["goal"]["measured"] is None and "root" in saved["goal"]["why"]
    assert res["ok"]  # a skip is not a failure
    assert (tmp_path / "locality_breakdown.png").stat().st_size > 0


@pytest.mark.skipif(REASON is not None, reason=f"capped link unavailable: {REASON}")
def test_cli_runs_capped_and_loopback_for_real(tmp_path: Path) -> None:
    before = _netns_names()
    proc = subprocess.run(
        [sys.executable, "-m", "fades", "bench", "locality", "--sizes", "0.4",
         "--reps", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "locality.json").read_text())
    capped, loop = res["runs"]["capped"], res["runs"]["loopback"]
    assert capped["status"] == loop["status"] == "ok"
    row = capped["sizes"][0]
    # 0.4 Mb up a 0.574 Mbit/s link takes at least ~0.7 s; the edge ships only the result
    assert row["cloud"]["median"]["retrieval"] > 0.6
    assert row["cloud"]["median"]["uplink_bytes"] > row["blob_bytes"]
    assert row["edge"]["median"]["uplink_bytes"] < row["blob_bytes"] / 10
    # (how much faster the edge is, capped and not, is the benchmark's figure, not asserted
    # here: on a loaded CI machine a 1-rep run's compute times swing too much)
    assert row["ratio_cloud_over_edge"] is not None
    assert loop["sizes"][0]["cloud"]["median"]["total"] > 0  # the loopback run measured
    for png in ("locality_breakdown.png", "locality_totals.png"):
        assert (tmp_path / png).stat().st_size > 10_000
    assert "goal: edge >= 10x" in proc.stdout
    assert _netns_names() <= before  # the namespace is gone
