"""Nimbus variants: single solver (ST), sliced parallel solvers (MT) and MT + global pass (2PMT).

MT splits the infrastructure into non-overlapping slices. Each access point goes to one
slice together with its T1 node, so every device is solved by exactly one worker; T2 and
T3 nodes are dealt round-robin per tier (with 10 workers and 3 T3 nodes, only three slices
get a T3 node, as in the paper). The workers are separate processes, so the slices are
solved truly in parallel. 2PMT then re-runs every device that MT did not place on an edge
node through one central pass over the whole infrastructure, starting from MT's loads.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from fades.errors import PlacementError
from fades.placement.model import Allocation, Devices, Infrastructure, IntArray
from fades.placement.nimbus import NimbusParams, PlacementState, place_one, solve

__all__ = ["Slice", "SolverPool", "partition", "solve_2pmt", "solve_mt", "solve_st"]


@dataclass(frozen=True, slots=True)
class Slice:
    """The access points and nodes one MT worker owns (global indices)."""

    aps: IntArray
    nodes: IntArray


def partition(infra: Infrastructure, k: int) -> list[Slice]:
    """Split ``infra`` into ``k`` non-overlapping slices (see the module docstring)."""
    if k < 1:
        raise PlacementError("need at least one slice", slices=k)
    ap_owner = np.empty(infra.n_aps, dtype=np.int64)
    home = infra.home_ap_t1
    # APs with a T1 node follow it; T1 nodes are dealt round-robin.
    t1_owner = {}
    for idx, j in enumerate(np.flatnonzero(infra.tier == 0).tolist()):
        t1_owner[j] = idx % k
    orphan = 0
    for a in range(infra.n_aps):
        j = int(home[a])
        if j >= 0 and j in t1_owner:
            ap_owner[a] = t1_owner[j]
        else:
            ap_owner[a] = orphan % k
            orphan += 1
    node_owner = np.empty(infra.n_nodes, dtype=np.int64)
    for t in range(3):
        cols = np.flatnonzero(infra.tier == t)
        node_owner[cols] = np.arange(cols.shape[0]) % k
    return [
        Slice(
            aps=np.flatnonzero(ap_owner == s).astype(np.int64),
            nodes=np.flatnonzero(node_owner == s).astype(np.int64),
        )
        for s in range(k)
    ]


_BARRIER: Any = None


def _init_worker(barrier: Any) -> None:
    global _BARRIER
    _BARRIER = barrier


def _solve_slice(
    infra: Infrastructure, devices: Devices, params: NimbusParams, seed: int, sync: bool = False
) -> tuple[Allocation, int]:
    """Worker entry point: solve one slice; also report the worker's pid.

    With ``sync`` every worker first waits on a shared barrier, so the ``k`` slices of one
    solve are guaranteed to run in ``k`` different processes at the same time (a free
    worker cannot grab a second slice while its peers are idle).
    """
    if sync and _BARRIER is not None:
        _BARRIER.wait(timeout=60)
    return solve(infra, devices, params, rng=seed, method="MT-slice"), os.getpid()


def _noop() -> int:
    return os.getpid()


class SolverPool:
    """A pool of worker processes for MT/2PMT, reusable across many solves.

    Uses the ``forkserver`` start method where available (``spawn`` elsewhere), so workers
    are fresh processes and never inherit the parent's threads. ``startup_s`` records how
    long it took to start the workers and import the solver in each.
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise PlacementError("a solver pool needs at least one worker", workers=workers)
        self.workers = workers
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        t0 = time.perf_counter()
        barrier = ctx.Barrier(workers)
        self._pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(barrier,)
        )
        # Make every worker start and import numpy + the solver before timing anything.
        pids = set()
        for _ in range(4):
            futs = [self._pool.submit(_noop) for _ in range(workers * 2)]
            pids |= {f.result() for f in futs}
            if len(pids) >= workers:
                break
        warm = [
            self._pool.submit(_solve_slice, *_tiny_problem(), NimbusParams(), 0, True)
            for _ in range(workers)
        ]
        for w in warm:
            w.result()
        self.startup_s = time.perf_counter() - t0

    @property
    def executor(self) -> ProcessPoolExecutor:
        return self._pool

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> SolverPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _tiny_problem() -> tuple[Infrastructure, Devices]:
    one = np.ones(1)
    infra = Infrastructure(
        tier=np.zeros(1, dtype=np.int64),
        slope_ms=one,
        intercept_ms=np.zeros(1),
        compute_ms=one,
        node_bw_mbps=one * 100,
        rtt_ms=np.ones((1, 1)),
        wifi_mbps=one * 100,
        cloud_rtt_ms=np.ones((1, 1)),
    )
    devices = Devices(
        ap=np.zeros(1, dtype=np.int64),
        phone=np.zeros(1, dtype=np.int64),
        data_kb=one,
        eps_t_ms=one * 50,
        eps_b_mj=one * 100,
        tx_power=one,
        local_ms=one * 100,
        local_mj=one * 100,
    )
    return infra, devices


def solve_st(
    infra: Infrastructure,
    devices: Devices,
    params: NimbusParams | None = None,
    *,
    rng: np.random.Generator | int | None = None,
) -> Allocation:
    """Single solver with a view of the whole infrastructure."""
    return solve(infra, devices, params, rng=rng, method="ST")


def _slice_problems(
    infra: Infrastructure, devices: Devices, slices: list[Slice]
) -> list[tuple[Infrastructure, Devices, IntArray]]:
    problems = []
    for sl in slices:
        ap_remap = np.full(infra.n_aps, -1, dtype=np.int64)
        ap_remap[sl.aps] = np.arange(sl.aps.shape[0])
        idx = np.flatnonzero(ap_remap[devices.ap] >= 0).astype(np.int64)
        problems.append(
            (infra.subset(sl.aps, sl.nodes), devices.subset(idx, ap_remap=ap_remap), idx)
        )
    return problems


def _mt(
    infra: Infrastructure,
    devices: Devices,
    workers: int,
    params: NimbusParams,
    seed: int,
    pool: SolverPool | None,
) -> tuple[PlacementState, dict[str, float]]:
    t0 = time.perf_counter()
    slices = partition(infra, workers)
    problems = _slice_problems(infra, devices, slices)
    eps_ref = float(devices.eps_t_ms.max()) if devices.n else 0.0
    stats: dict[str, float] = {"pool_startup_s": 0.0}
    if workers == 1:
        results = [_solve_slice(problems[0][0], problems[0][1], params, seed)]
    else:
        own = pool is None
        active = pool if pool is not None else SolverPool(workers)
        if active.workers != workers:
            raise PlacementError(
                "the solver pool size must match the MT worker count",
                pool=active.workers,
                workers=workers,
            )
        if own:
            stats["pool_startup_s"] = active.startup_s
        try:
            futs = [
                active.executor.submit(_solve_slice, sub_i, sub_d, params, seed + s, True)
                for s, (sub_i, sub_d, _) in enumerate(problems)
            ]
            results = [f.result() for f in futs]
        finally:
            if own:
                active.close()
    t_merge = time.perf_counter()
    state = PlacementState(infra, devices, eps_ref)
    for (al, _pid), sl, (_, _, idx) in zip(results, slices, problems, strict=True):
        state.adopt(al, sl.nodes, idx)
    end = time.perf_counter()
    stats["merge_s"] = end - t_merge
    stats["max_slice_s"] = max(al.convergence_s for al, _ in results)
    stats["processes"] = float(len({pid for _, pid in results}))
    stats["mt_s"] = end - t0 - stats["pool_startup_s"]
    return state, stats


def solve_mt(
    infra: Infrastructure,
    devices: Devices,
    workers: int,
    params: NimbusParams | None = None,
    *,
    seed: int = 0,
    pool: SolverPool | None = None,
) -> Allocation:
    """MT-Nimbus: ``workers`` processes, each solving its own slice.

    ``convergence_s`` is the wall time from slicing to the merged result, excluding pool
    start-up; when no ``pool`` is given one is started and its start-up time is reported in
    ``extra["pool_startup_s"]``.
    """
    state, stats = _mt(infra, devices, workers, params or NimbusParams(), seed, pool)
    al = state.to_allocation("MT", stats["mt_s"])
    al.extra.update(stats)
    return al


def solve_2pmt(
    infra: Infrastructure,
    devices: Devices,
    workers: int,
    params: NimbusParams | None = None,
    *,
    seed: int = 0,
    pool: SolverPool | None = None,
) -> Allocation:
    """2PMT-Nimbus: MT, then one central pass for every device MT left off the edge."""
    params = params or NimbusParams()
    state, stats = _mt(infra, devices, workers, params, seed, pool)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed + 10_007)
    left = np.flatnonzero(state.target < 0)
    edge_before = int(np.sum(state.target >= 0))
    for i in left.tolist():
        place_one(state, i, params, rng)
    stage2 = time.perf_counter() - t0
    al = state.to_allocation("2PMT", stats["mt_s"] + stage2)
    al.extra.update(stats)
    al.extra["stage2_s"] = stage2
    al.extra["second_pass_devices"] = float(left.shape[0])
    al.extra["recovered"] = float(int(np.sum(al.target >= 0)) - edge_before)
    return al
