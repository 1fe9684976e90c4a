"""Edge vs cloud by payload over a really capped link: the FADES paper's figures 5 and 6.

Run ``python benchmarks/bench_locality.py [--quick]`` (``make bench`` runs it through
``run_all.py``). The same as ``fades bench locality``: for payloads of 1.5, 5, 15 and 50 Mb
of raw readings, the same function runs at the edge (next to the data) and in the cloud
(the raw data crosses a 0.574 Mbit/s uplink), with the link built from a network namespace,
a veth pair and ``tc tbf`` (45.38 Mbit/s down). Also run on loopback for comparison.
Writes ``benchmarks/results/locality.json``, ``locality_breakdown.png`` and
``locality_totals.png``.

Needs root for the capped link; without it that part is skipped and the JSON says why.
Target (issue 3): the edge beats the cloud by at least 10x at 1.5 Mb over the capped link.
About 4 minutes (the 50 Mb cloud run alone takes ~90 s on the uplink); ``--quick`` (1.5 and
5 Mb, 2 repetitions) about 1 minute.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fades.bench.locality import DEFAULT_SIZES, QUICK_SIZES, Settings, run
from fades.bench.report import table

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1.5 and 5 Mb, 2 repetitions")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per size (default 3)")
    ap.add_argument("--no-cap", action="store_true", help="loopback only")
    args = ap.parse_args(argv)
    settings = Settings(
        sizes_mbit=list(QUICK_SIZES if args.quick else DEFAULT_SIZES),
        reps=min(args.reps, 2) if args.quick else args.reps,
        out=RESULTS,
        cap=not args.no_cap,
    )
    res = run(settings)
    print(table(res))
    print(f"took {res['duration_s']:.0f} s")
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
