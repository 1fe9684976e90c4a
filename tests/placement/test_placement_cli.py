"""``python -m fades.placement.cli nimbus`` end to end, as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg


def test_cli_quick_run_writes_sane_json_and_figures(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fades.placement.cli",
            "nimbus",
            "--quick",
            "--iterations",
            "2",
            "--seed",
            "3",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "nimbus_results.json").read_text())
    assert result["iterations"] == 2 and result["seed"] == 3
    cells = result["cells"]
    assert {(c["infra"], c["devices"]) for c in cells} == {
        (i, n) for i in ("C2", "C3") for n in (200, 500)
    }
    for c in cells:
        assert abs(c["edge"] + c["cloud"] + c["local"] - 1.0) < 1e-9
        assert c["violations"] == 0
        assert 0 < c["latency_ms"]["mean"] < 200
    assert [r["workers"] for r in result["variants"]["MT"]] == [1.0, 2.0]
    for name in ("latency", "energy", "fractions", "variants"):
        png = out / f"nimbus_{name}.png"
        img = mpimg.imread(png)
        assert img.shape[0] > 300 and img.shape[1] > 600
        assert img.std() > 0.05  # not a blank canvas


def test_cli_rejects_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("nimbus: {alpah: 1}\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fades.placement.cli",
            "nimbus",
            "--config",
            str(bad),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "invalid placement config" in proc.stderr
