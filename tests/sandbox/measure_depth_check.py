"""What the runtime's depth check costs per invocation (not a test): main's runtime against
this checkout's, in the same run, calls alternating, one open session each.

Run:  PYTHONPATH=src:. python tests/sandbox/measure_depth_check.py OLD_HASH [N]

OLD_HASH names a runtime in FADES_CACHE/runtime (``runtime-OLD_HASH.wasm``; build it from a
checkout of the baseline with ``python -c "from fades.functions.build import runtime_wasm;
runtime_wasm()"`` and ``runtime_source_hash()``). Prints the p50 wall time of ``invoke`` and of
its result stage (the check, the encoding and the host's parse) for three results: a
number, 10,000 small records, 100,000 floats.
"""

from __future__ import annotations

import statistics
import sys
import time

from tests.guests import python_artifact as art

from fades import paths
from fades.broker.base import Dataset
from fades.functions.artifact import create
from fades.functions.build import runtime_source_hash
from fades.functions.keys import SigningKey
from fades.sandbox import Limits, PythonSandbox
from fades.sandbox.wire import encode

CASES = {
    "a number": "def main(data, params):\n    return 1.5\n",
    "10k records": "def main(data, params):\n"
    "    return [{'room': 'r%d' % i, 'v': [i, i * 2.0]} for i in range(10000)]\n",
    "100k floats": "def main(data, params):\n    return {'v': [i * 0.5 for i in range(100000)]}\n",
}


def main() -> None:
    key = SigningKey.generate()

    def sandbox(h: str) -> PythonSandbox:
        wasm = (paths.cache() / "runtime" / f"runtime-{h}.wasm").read_bytes()
        return PythonSandbox(create("runtime", "fades-python-runtime", wasm, key=key, entry="run"))

    runtimes = {"main": sandbox(sys.argv[1]), "branch": sandbox(runtime_source_hash())}
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    blob = encode({"t": Dataset.from_records([1.0], [1.5], ["t"], ["r"], ["d"])}, {})
    limits = Limits(128, 20000)
    for name, src in CASES.items():
        fn = art("m", src, key)
        sessions = {k: sb.open(fn, limits) for k, sb in runtimes.items()}
        times: dict[str, list[float]] = {k: [] for k in sessions}
        results: dict[str, list[float]] = {k: [] for k in sessions}
        for s in sessions.values():
            s.invoke(blob)  # warm
        for i in range(n):
            for k in sorted(sessions, reverse=bool(i % 2)):
                t0 = time.perf_counter()
                res = sessions[k].invoke(blob)
                times[k].append(time.perf_counter() - t0)
                results[k].append(res.timing["result"])
        for s in sessions.values():
            s.close()
        old, new = (statistics.median(times[k]) for k in ("main", "branch"))
        ms = f"p50 main {old * 1e3:8.3f} ms  branch {new * 1e3:8.3f} ms"
        ro, rn = (statistics.median(results[k]) for k in ("main", "branch"))
        enc = f"result stage main {ro * 1e3:8.3f} ms  branch {rn * 1e3:8.3f} ms"
        print(f"{name:12s} invoke {ms}  x{new / old:.2f};  {enc}  x{rn / ro:.2f}")


if __name__ == "__main__":
    main()
