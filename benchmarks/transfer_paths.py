"""Experiment: the ways bulk input can reach a Python (componentize-py) guest, side by side.

Not part of ``make bench`` (it builds its own component, about a minute): run
``python benchmarks/transfer_paths.py [--quick]``. Writes ``benchmarks/results/
transfer_paths.json`` and ``transfer_paths.png``.

Each path moves the same bytes into a fresh instance and the guest times its own read
(as ``bench_transfer.py`` does); the baseline is a native ``memmove`` of the same bytes into
fresh pages, measured in the same run. The paths:

- ``file``: the runtime's path today, ``/input/data.fds`` read through a Python file object
  (WASI preview 1 through the component adapter);
- ``descriptor_read``: ``wasi:filesystem`` ``descriptor.read(length, offset)`` called
  directly, asking for everything that is left in each call;
- ``stream_read``: ``descriptor.read-via-stream`` then ``input-stream.blocking-read`` with
  everything that is left as the length;
- ``stdin_stream`` / ``stdin_fd`` / ``stdin_fd_1mib``: the input given as stdin bytes
  (``wasi_config_set_stdin_bytes``), read with one ``blocking-read`` / through the adapter's
  fd 0 in one call / 1 MiB a call (``host_setup_s``: the host's copy into the WASI config,
  not in the guest's time);
- ``host_string``: a host function (Python, through wasmtime-py) returning the bytes as an
  ASCII string;
- ``host_bytes``: a host function returning ``list<u8>`` (1 MB at most: wasmtime-py converts
  it one byte at a time);
- ``call_cost``: 1000 one-byte ``descriptor.read`` calls (the fixed cost of a WASI call).

What it showed (wasmtime-py 50.0.1, componentize-py 0.25.1): the host returns at most 64 KiB
per file read whichever WASI call asks for more; each WASI call has a fixed cost of tens of
microseconds; stdin bytes come in one call, but the copies of one huge buffer (the host's
vector, the guest's allocation, the Python ``bytes``) cost about what the saved calls did,
stdin cannot be seeked (the lazy column reader needs to) and is fixed when a pooled instance
is created; host functions are far slower (a string result, and ``list<u8>``, which
wasmtime-py converts one byte at a time into a 32-byte C value per byte). The runtime's file
read already reaches about half of a ``memmove``: two copies (kernel to host, host to guest).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import wasmtime
from wasmtime import _ffi as ffi
from wasmtime import component

from _common import MB, RESULTS, log, parse_args, write_json
from fades import paths

HERE = Path(__file__).resolve().parent / "transfer_paths"
GUEST = HERE / "guest.py"
PATHS = (
    "file", "descriptor_read", "stream_read", "stdin_stream", "stdin_fd", "stdin_fd_1mib",
    "host_string", "host_bytes",
)  # fmt: skip
#: wasmtime-py builds list<u8> results one byte at a time: larger sizes take minutes
HOST_BYTES_MAX = 1_000_000


def _sources() -> list[Path]:
    return [GUEST, *sorted(HERE.rglob("*.wit"))]


def build() -> component.Component:
    """Build (componentize-py) and compile the experiment's component, cached by source."""
    h = hashlib.sha256()
    for p in _sources():
        h.update(p.relative_to(HERE).as_posix().encode() + p.read_bytes())
    cached = paths.cache() / "transfer-paths" / f"{h.hexdigest()[:16]}.cwasm"
    engine = _engine()
    if cached.exists():
        return component.Component.deserialize_file(engine, str(cached))
    with tempfile.TemporaryDirectory(prefix="fades-xfer-") as tmp:
        t = Path(tmp)
        (t / "app.py").write_bytes(GUEST.read_bytes())
        launcher = "import sys, componentize_py; sys.exit(componentize_py.script())"
        cmd = [
            sys.executable, "-c", launcher, "-d", str(HERE / "wit"), "-w", "transfer-paths",
            "componentize", "app", "-p", str(t), "-o", str(t / "out.wasm"),
        ]  # fmt: skip
        subprocess.run(cmd, cwd=t, check=True, capture_output=True)
        comp = component.Component.from_file(engine, str(t / "out.wasm"))
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp_file = cached.with_suffix(".tmp")
    tmp_file.write_bytes(comp.serialize())
    tmp_file.replace(cached)
    return comp


_ENGINE: list[wasmtime.Engine] = []


def _engine() -> wasmtime.Engine:
    if not _ENGINE:
        _ENGINE.append(wasmtime.Engine())
    return _ENGINE[0]


def _linker(blob: bytes) -> component.Linker:
    linker = component.Linker(_engine())
    linker.add_wasip2()
    with linker.root() as root:
        root.add_func("host-string", lambda store, n: "a" * n)
        root.add_func("host-bytes", lambda store, n: blob[:n])
    return linker


def _set_stdin(wasi: wasmtime.WasiConfig, blob: bytes) -> float:
    """The input as stdin bytes: one copy of the blob into a byte vector WASI takes over."""
    t0 = time.perf_counter()
    vec = ffi.wasm_byte_vec_t()
    ffi.wasm_byte_vec_new_uninitialized(ctypes.byref(vec), len(blob))
    ctypes.memmove(vec.data, blob, len(blob))
    ffi.wasi_config_set_stdin_bytes(wasi.ptr(), ctypes.byref(vec))
    return time.perf_counter() - t0


def run_once(
    comp: component.Component, linker: component.Linker, input_dir: str, blob: bytes, n: int,
    mode: str,
) -> dict[str, Any]:  # fmt: skip
    store = wasmtime.Store(_engine())
    wasi = wasmtime.WasiConfig()
    wasi.preopen_dir(input_dir, "/input", False)
    setup = _set_stdin(wasi, blob[:n]) if mode.startswith("stdin") else 0.0
    store.set_wasi(wasi)
    inst = linker.instantiate(store, comp)
    func = inst.get_func(store, "run")
    assert func is not None
    t0 = time.perf_counter()
    out: dict[str, Any] = json.loads(func(store, n, mode))
    out["host_wall_s"] = time.perf_counter() - t0
    out["host_setup_s"] = setup
    if out["bytes"] != n:
        raise RuntimeError(f"{mode}: the guest got {out['bytes']} of {n} bytes")
    return out


def measure(sizes_mb: list[int], reps: int) -> dict[str, Any]:
    comp = build()
    blob = os.urandom(max(sizes_mb) * MB)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fades-xfer-in-", dir="/dev/shm") as d:
        linker = _linker(blob)
        Path(d, "data.fds").write_bytes(blob[: min(sizes_mb) * MB])
        per_call = [
            run_once(comp, linker, d, blob, 1000, "call_cost")["seconds"] / 1000
            for _ in range(reps)
        ]
        for size in sizes_mb:
            n = size * MB
            Path(d, "data.fds").write_bytes(blob[:n])
            samples: dict[str, list[dict[str, Any]]] = {p: [] for p in ("memmove", *PATHS)}
            for _ in range(reps):
                dst = bytearray(n)  # fresh pages, as a fresh instance's memory
                t0 = time.perf_counter()
                dst[:] = blob[:n]
                samples["memmove"].append({"seconds": time.perf_counter() - t0, "bytes": n})
                del dst
                for mode in PATHS:
                    k = min(n, HOST_BYTES_MAX) if mode == "host_bytes" else n
                    samples[mode].append(run_once(comp, linker, d, blob, k, mode))
            row: dict[str, Any] = {"size_mb": size}
            for mode, xs in samples.items():
                sec = statistics.median(x["seconds"] for x in xs)
                row[mode] = {
                    "bytes": xs[0]["bytes"],
                    "seconds_p50": sec,
                    "mb_per_s_p50": xs[0]["bytes"] / MB / sec,
                    "calls": xs[0].get("calls"),
                    "first_chunk_bytes": xs[0].get("first"),
                    "host_setup_s_p50": statistics.median(x.get("host_setup_s", 0.0) for x in xs),
                }
            base = row["memmove"]["mb_per_s_p50"]
            for mode in PATHS:
                row[mode]["fraction_of_memmove"] = row[mode]["mb_per_s_p50"] / base
                row[mode]["ratio_to_file"] = row[mode]["mb_per_s_p50"] / row["file"]["mb_per_s_p50"]
            rows.append(row)
            log(
                f"   {size:4d} MB: memmove {base:6.0f} MB/s | "
                + ", ".join(f"{m} {row[m]['mb_per_s_p50']:5.0f}" for m in PATHS)
            )
    return {
        "wasi_call_fixed_cost_us_p50": statistics.median(per_call) * 1e6,
        "rows": rows,
    }


def plot(res: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(10, 4.5))
    sizes = [r["size_mb"] for r in res["rows"]]
    for mode in ("memmove", *PATHS):
        style = "k--" if mode == "memmove" else "o-"
        label = "native memmove (baseline)" if mode == "memmove" else mode
        if mode == "host_bytes":
            label += f" (at most {HOST_BYTES_MAX // MB} MB)"
        ax.plot(sizes, [r[mode]["mb_per_s_p50"] for r in res["rows"]], style, label=label)
    ax.axhline(1500, ls=":", color="red", lw=1, label="target 1.5 GB/s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("input size, MB")
    ax.set_ylabel("guest read p50, MB/s (log)")
    ax.set_title("Ways into a Python guest (fresh instance per read)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    quick = parse_args(__doc__ or "", argv)
    t0 = time.perf_counter()
    meta = {"quick": quick, "load_avg_start": os.getloadavg(), "wasmtime": version("wasmtime")}
    res = measure([10, 100] if quick else [1, 10, 100], 2 if quick else 5)
    meta["load_avg_end"] = os.getloadavg()
    meta["wall_s"] = time.perf_counter() - t0
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = write_json(RESULTS / "transfer_paths.json", {"meta": meta, "transfer_paths": res})
    plot(res, RESULTS / "transfer_paths.png")
    log(f"wrote {out}; a WASI call costs {res['wasi_call_fixed_cost_us_p50']:.0f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
