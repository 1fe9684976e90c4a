"""Run every ``benchmarks/bench_*.py`` in turn, each in its own process, and summarise.

Usage: ``python benchmarks/run_all.py [--quick]`` (``make bench`` runs it). ``--quick`` is
passed through to each benchmark. Exits non-zero if any benchmark fails to run; whether a
benchmark meets its targets is reported by the benchmark itself (see its JSON).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    args = ap.parse_args(argv)
    # the chaos run is the longest: last, so a failure elsewhere shows first
    scripts = sorted(HERE.glob("bench_*.py"), key=lambda p: (p.name == "bench_chaos.py", p.name))
    rows: list[tuple[str, int, float]] = []
    for script in scripts:
        cmd = [sys.executable, str(script), *(["--quick"] if args.quick else [])]
        print(f"=== {script.name} {'--quick' if args.quick else ''}".rstrip(), flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=HERE.parent, check=False).returncode
        rows.append((script.name, rc, time.perf_counter() - t0))
    print("\n=== summary")
    width = max((len(name) for name, _, _ in rows), default=10)
    for name, rc, wall in rows:
        status = "ok" if rc == 0 else f"FAILED (exit {rc})"
        print(f"{name:<{width}}  {wall:7.1f} s  {status}")
    print(f"results in {HERE / 'results'}")
    return 0 if all(rc == 0 for _, rc, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
