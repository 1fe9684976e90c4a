"""Random infrastructures and device batches drawn from the published parameters."""

from __future__ import annotations

import math

import numpy as np

from fades.errors import PlacementError
from fades.placement.config import InfraSize, MixtureComponent, NimbusConfig
from fades.placement.model import Devices, FloatArray, Infrastructure

__all__ = ["generate_devices", "generate_infrastructure", "sample_mixture"]


def sample_mixture(
    components: tuple[MixtureComponent, ...], size: int | tuple[int, ...], rng: np.random.Generator
) -> FloatArray:
    """Draw RTTs from a Gaussian mixture, folded at zero (an RTT is never negative)."""
    weights = np.array([c.weight for c in components], dtype=np.float64)
    weights /= weights.sum()
    means = np.array([c.mean_ms for c in components])
    sds = np.array([c.sd_ms for c in components])
    pick = rng.choice(len(components), size=size, p=weights)
    return np.abs(rng.normal(means[pick], sds[pick]))


def _lognormal(
    mean: float, sd: float, size: tuple[int, ...], rng: np.random.Generator
) -> FloatArray:
    """Log-normal samples with the given arithmetic mean and standard deviation."""
    if sd == 0:
        return np.full(size, mean)
    sigma2 = math.log1p((sd / mean) ** 2)
    mu = math.log(mean) - sigma2 / 2
    return rng.lognormal(mu, math.sqrt(sigma2), size)


def generate_infrastructure(
    size: InfraSize, cfg: NimbusConfig, rng: np.random.Generator | int | None = None
) -> Infrastructure:
    """An infrastructure with ``size``'s node counts.

    Access points default to ``cfg.aps_per_t1`` per T1 node; each T1 node sits at its own
    access points (RTT ``cfg.own_t1_rtt_ms``, the constant diagonal of the published RTT
    matrix) and every other AP-to-node RTT is drawn from that node tier's mixture.
    """
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    n_aps = size.aps if size.aps is not None else cfg.aps_per_t1 * max(size.t1, 1)
    if size.t1 > n_aps:
        raise PlacementError("an infrastructure cannot have more T1 nodes than access points")
    counts = (size.t1, size.t2, size.t3)
    tier = np.repeat(np.arange(3, dtype=np.int64), counts)
    m = int(tier.shape[0])
    slope = np.array([cfg.queue[t].slope_ms for t in tier], dtype=np.float64)
    intercept = np.array([cfg.queue[t].intercept_ms for t in tier], dtype=np.float64)
    compute = np.array([cfg.queue[t].compute_ms for t in tier], dtype=np.float64)
    bw = np.array([cfg.tier_bw_mbps[t] for t in tier], dtype=np.float64)
    rtt = np.empty((n_aps, m))
    for t in range(3):
        cols = np.flatnonzero(tier == t)
        if cols.shape[0]:
            rtt[:, cols] = sample_mixture(cfg.rtt_mixture[t], (n_aps, cols.shape[0]), gen)
    # T1 node j serves access points [j*r, (j+1)*r) as their own node.
    ratio = max(1, n_aps // max(size.t1, 1)) if size.aps is not None else cfg.aps_per_t1
    home = np.full(n_aps, -1, dtype=np.int64)
    for j in range(size.t1):
        aps = np.arange(j * ratio, min((j + 1) * ratio, n_aps))
        home[aps] = j
        rtt[aps, j] = cfg.own_t1_rtt_ms
    cloud = _lognormal(cfg.cloud.rtt_mean_ms, cfg.cloud.rtt_sd_ms, (n_aps, cfg.cloud.count), gen)
    return Infrastructure(
        tier=tier,
        slope_ms=slope,
        intercept_ms=intercept,
        compute_ms=compute,
        node_bw_mbps=bw,
        rtt_ms=rtt,
        wifi_mbps=np.full(n_aps, cfg.wifi_mbps),
        cloud_rtt_ms=cloud,
        cloud_inference_ms=cfg.cloud.inference_ms,
        home_ap_t1=home,
    )


def generate_devices(
    n: int,
    infra: Infrastructure,
    cfg: NimbusConfig,
    rng: np.random.Generator | int | None = None,
    *,
    fps: float | None = None,
) -> Devices:
    """``n`` devices on uniformly drawn access points, phone classes assigned uniformly.

    Every device streams ``cfg.frame_kb`` per frame; its latency bound is one frame interval
    and its energy bound is the energy of one local inference (``eps_b = TEC_i``).
    """
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    eps = 1000.0 / (fps if fps is not None else cfg.fps)
    phone = gen.integers(len(cfg.phones), size=n).astype(np.int64)
    local_ms = np.array([p.local_ms for p in cfg.phones])[phone]
    local_mj = np.array([p.local_mj for p in cfg.phones])[phone]
    return Devices(
        ap=gen.integers(infra.n_aps, size=n).astype(np.int64),
        phone=phone,
        data_kb=np.full(n, cfg.frame_kb),
        eps_t_ms=np.full(n, eps),
        eps_b_mj=local_mj.copy(),
        tx_power=np.full(n, cfg.tx_power_mj_per_ms),
        local_ms=local_ms,
        local_mj=local_mj,
    )
