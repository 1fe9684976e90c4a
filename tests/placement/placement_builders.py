"""Builders for the placement tests: tiny hand-made infrastructures and devices."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fades.placement.model import Devices, Infrastructure


def make_infra(
    rtt: Sequence[Sequence[float]],
    *,
    slope: Sequence[float],
    intercept: Sequence[float],
    compute: Sequence[float],
    node_bw: Sequence[float] | None = None,
    wifi: Sequence[float] | None = None,
    cloud_rtt: Sequence[Sequence[float]] | None = None,
    cloud_inference: float = 5.0,
    tier: Sequence[int] | None = None,
) -> Infrastructure:
    rtt_arr = np.asarray(rtt, dtype=np.float64)
    a, m = rtt_arr.shape
    return Infrastructure(
        tier=np.asarray(tier if tier is not None else [0] * m, dtype=np.int64),
        slope_ms=np.asarray(slope, dtype=np.float64),
        intercept_ms=np.asarray(intercept, dtype=np.float64),
        compute_ms=np.asarray(compute, dtype=np.float64),
        node_bw_mbps=np.asarray(node_bw if node_bw is not None else [1000.0] * m),
        rtt_ms=rtt_arr,
        wifi_mbps=np.asarray(wifi if wifi is not None else [100.0] * a, dtype=np.float64),
        cloud_rtt_ms=np.asarray(
            cloud_rtt if cloud_rtt is not None else [[1000.0]] * a, dtype=np.float64
        ),
        cloud_inference_ms=cloud_inference,
    )


def make_devices(
    ap: Sequence[int],
    *,
    data_kb: float = 25.0,
    eps_t: float = 50.0,
    eps_b: float = 100.0,
    w: float = 1.0,
    local_ms: float = 150.0,
    local_mj: float = 200.0,
) -> Devices:
    n = len(ap)
    return Devices(
        ap=np.asarray(ap, dtype=np.int64),
        phone=np.zeros(n, dtype=np.int64),
        data_kb=np.full(n, data_kb),
        eps_t_ms=np.full(n, eps_t),
        eps_b_mj=np.full(n, eps_b),
        tx_power=np.full(n, w),
        local_ms=np.full(n, local_ms),
        local_mj=np.full(n, local_mj),
    )
