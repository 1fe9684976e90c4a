"""Run ``python -m fades ARGS`` under yappi (CPU clock, all threads); save a pstats file.

Used by ``bench_controller.py`` when ``FADES_BENCH_PROFILE_NODE`` names a file: the node
agent runs as ``python benchmarks/_profile_node.py OUT node start ...``, and writes ``OUT``
(read it with ``python -m pstats OUT``) when it stops cleanly (SIGTERM).
"""

from __future__ import annotations

import runpy
import sys

import yappi


def main() -> None:
    out = sys.argv[1]
    sys.argv = ["fades", *sys.argv[2:]]
    yappi.set_clock_type("cpu")
    yappi.start(builtins=True)
    try:
        runpy.run_module("fades", run_name="__main__", alter_sys=True)
    finally:
        yappi.stop()
        yappi.get_func_stats().save(out, type="pstat")


if __name__ == "__main__":
    main()
