"""Host peak RSS and wall time of the retrieval and YAML bombs of issue 16 (not a test).

Run:  PYTHONPATH=src python tests/broker/measure_bombs.py [WORKDIR]

Builds (once, in WORKDIR, default /tmp/fades-bombs) two node folders through the CLI: ``big``
holds 10 M readings of one sensor, ``office`` the 2-day office testbed. Then runs each bomb as
``python -m fades task run FILE --home H`` in a subprocess and prints its exit code, wall time
and peak RSS (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` of a fresh wrapper process).
Each run is capped at BOMB_TIMEOUT seconds (default 600); further arguments select bombs
whose label contains one of them (e.g. ``laughs``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

FN = """
def main(data, params):
    return {name: len(ds) for name, ds in data.items()}
"""

WRAP = """
import resource, subprocess, sys, time
t0 = time.perf_counter()
try:
    p = subprocess.run(sys.argv[2:], capture_output=True, text=True, timeout=float(sys.argv[1]))
    rc, out = p.returncode, (p.stderr.strip().splitlines() or [''])[-1][:200]
except subprocess.TimeoutExpired:
    rc, out = 'timeout', ''
dt = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f'{rc}\\t{dt:.1f}\\t{rss:.0f}\\t{out}')
"""


def fades(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fades", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def setup_home(home: Path, work: Path) -> None:
    if (home / "artifacts").exists():
        return
    home.mkdir(parents=True)
    for args in (("keys", "generate"), ("fn", "runtime")):
        r = fades(home, *args)
        assert r.returncode == 0, r.stderr
    src = work / "count_rows.py"
    src.write_text(textwrap.dedent(FN))
    r = subprocess.run(
        [sys.executable, "-m", "fades", "fn", "build", str(src), "--home", str(home)],
        capture_output=True,
        text=True,
        cwd=work,
    )
    assert r.returncode == 0, r.stderr


def measure(label: str, home: Path, task: Path, timeout: float) -> None:
    if ONLY and not any(o in label for o in ONLY):
        return
    cmd = [sys.executable, "-m", "fades", "task", "run", str(task), "--home", str(home)]
    r = subprocess.run(
        [sys.executable, "-c", WRAP, str(timeout), *cmd], capture_output=True, text=True
    )
    rc, dt, rss, msg = [*r.stdout.strip().split("\t"), "", "", "", ""][:4]
    print(f"{label:<28} exit={rc:<8} wall={dt:>6} s  peak_rss={rss:>6} MiB  {msg}", flush=True)


def laughs(levels: int) -> str:
    """A 'billion laughs' YAML: anchor ``l<i>`` repeats ``l<i-1>`` ten times."""
    out = ["l0: &l0 [" + ",".join(["lol"] * 10) + "]"]
    out += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(out) + "\n"


ONLY: list[str] = []


def main() -> None:
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/fades-bombs")
    ONLY.extend(sys.argv[2:])
    work.mkdir(parents=True, exist_ok=True)
    big, office = work / "big", work / "office"
    setup_home(big, work)
    setup_home(office, work)
    if not (big / ".filled").exists():
        from fades.broker import SQLiteConnector

        store = SQLiteConnector(big / "readings.db")
        t0 = 1_600_000_000.0
        for i in range(10):
            ts = t0 + np.arange(i * 1_000_000, (i + 1) * 1_000_000, dtype=np.float64)
            store.write_columns(ts, np.ones_like(ts), "temperature", "room1", "room1-t-1", "C")
        store.close()
        (big / ".filled").touch()
    if not (office / ".filled").exists():
        r = fades(office, "data", "generate", "--days", "2")
        assert r.returncode == 0, r.stderr
        (office / ".filled").touch()
    fn = {"artifact": "count_rows", "memory_mib": 64, "time_budget_ms": 60000}
    creds = {"tenant": "facilities"}
    tasks = {
        "10M rows, 64 MiB cap": {
            "credentials": creds,
            "data": [{"name": "all", "select": {}}],
            "function": fn,
        },
        "200 'everything' ops": {
            "credentials": creds,
            "data": [{"name": f"d{i}", "select": {}} for i in range(200)],
            "function": fn,
        },
    }
    timeout = float(os.environ.get("BOMB_TIMEOUT", "600"))
    for (label, task), home in zip(tasks.items(), (big, office), strict=True):
        path = work / (label.split()[0].strip("'") + ".json")
        path.write_text(json.dumps(task))
        measure(label, home, path, timeout)
    bomb = work / "laughs9.yaml"
    bomb.write_text(laughs(9) + "credentials: {tenant: x}\n")
    measure("laughs 10^9, top level", office, bomb, timeout)
    for levels in (7, 8):  # the anchors inside params: a task that is otherwise valid
        bomb = work / f"laughs{levels}-params.yaml"
        params = "".join(f"\n    {line}" for line in laughs(levels).splitlines())
        bomb.write_text(
            "credentials: {tenant: facilities}\n"
            "data: [{name: t, select: {location: room1, last: 1}}]\n"
            "function:\n  artifact: count_rows\n  params:" + params + f"\n    x: *l{levels - 1}\n"
        )
        measure(f"laughs 10^{levels} in params", office, bomb, timeout)
    small = work / "small.json"
    small.write_text(
        json.dumps(
            {
                "credentials": creds,
                "data": [{"name": "t", "select": {"location": "room1", "last": 10}}],
                "function": fn,
            }
        )
    )
    measure("small task (office)", office, small, timeout)


if __name__ == "__main__":
    time_start = time.time()
    main()
