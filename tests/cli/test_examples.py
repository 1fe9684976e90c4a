"""The shipped example tasks do what the docs say, run through ``fades`` as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def fades(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fades", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=dict(os.environ),
        check=False,
    )


def test_aqi_scores_rooms_and_not_the_shop_floor_machines(tmp_path: Path) -> None:
    from fades.broker import SQLiteConnector

    home = tmp_path / "node"
    for step in (
        ("keys", "generate"),
        ("fn", "build", str(EXAMPLES / "functions" / "aqi.py")),
        ("fn", "runtime"),
        ("data", "generate", "--days", "0.1"),
    ):
        proc = fades(*step, home=home)
        assert proc.returncode == 0, proc
    store = SQLiteConnector(home / "readings.db")  # a machine's temperature, as --devices adds
    now = time.time()
    for k in range(20):
        store.add(now - 60 * k, 45.0, "temperature", "degC", "machine1", "machine1-temperature")
    store.close()
    proc = fades("task", "run", str(EXAMPLES / "tasks" / "aqi.yaml"), "--json", home=home)
    assert proc.returncode == 0, proc
    result = json.loads(proc.stdout)["result"]
    assert set(result) == {f"room{i}" for i in range(1, 6)}, result
    assert all(set(r["sub_indices"]) == {"co2", "humidity", "temperature"} for r in result.values())
