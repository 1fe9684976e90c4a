"""The data of a placement problem: queue models, the infrastructure, devices, the result.

Everything is held as numpy arrays indexed by position (node ``j``, access point ``a``,
device ``i``) so the solvers can work on whole rows at once. Units: milliseconds, megabits
per second, kilobytes and millijoules throughout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from fades.errors import PlacementError

__all__ = [
    "CLOUD",
    "LOCAL",
    "Allocation",
    "Devices",
    "FloatArray",
    "Infrastructure",
    "IntArray",
    "QueueModel",
    "Tier",
    "queue_time",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: ``Allocation.target`` value of a device served by a cloud datacenter.
CLOUD = -1
#: ``Allocation.target`` value of a device that runs its task itself.
LOCAL = -2


class Tier(IntEnum):
    """Edge tiers: T1 sits at the access points, T3 at the network core."""

    T1 = 0
    T2 = 1
    T3 = 2


@dataclass(frozen=True, slots=True)
class QueueModel:
    """Per-request time on an edge node serving ``c`` concurrent clients.

    The queue time grows linearly once the fit turns positive:
    ``q(c) = max(0, slope*c + intercept)`` for ``c >= 1`` and ``q(0) = 0``. The inference
    (compute) time is constant.
    """

    slope_ms: float
    intercept_ms: float
    compute_ms: float

    def __post_init__(self) -> None:
        if not self.slope_ms > 0 or not self.compute_ms >= 0:
            raise PlacementError(
                "queue model needs slope > 0 and compute >= 0",
                slope=self.slope_ms,
                compute=self.compute_ms,
            )

    def queue_ms(self, clients: int) -> float:
        """Queue time seen by each of ``clients`` concurrent clients."""
        if clients <= 0:
            return 0.0
        return max(0.0, self.slope_ms * clients + self.intercept_ms)

    def service_ms(self, clients: int) -> float:
        """Inference plus queue time with ``clients`` concurrent clients."""
        return self.compute_ms + self.queue_ms(clients)

    def max_clients(self, budget_ms: float) -> int:
        """Largest client count whose service time stays within ``budget_ms``.

        This inverts the linear fit: ``compute + slope*c + intercept <= budget``.
        """
        if budget_ms < self.compute_ms:
            return 0
        bound = (budget_ms - self.compute_ms - self.intercept_ms) / self.slope_ms
        # A tiny tolerance keeps exact hand-computed boundaries on the inclusive side.
        return max(0, math.floor(bound + 1e-9))


def queue_time(
    slope: FloatArray, intercept: FloatArray, clients: IntArray | FloatArray
) -> FloatArray:
    """Vectorised :meth:`QueueModel.queue_ms` over nodes."""
    q = np.maximum(0.0, slope * clients + intercept)
    return np.where(clients > 0, q, 0.0)


@dataclass(slots=True)
class Infrastructure:
    """Edge nodes, access points and clouds, with the RTTs between them.

    Attributes:
        tier: tier of each node, shape ``(M,)``.
        slope_ms, intercept_ms, compute_ms: queue model of each node, shape ``(M,)``.
        node_bw_mbps: bandwidth of each node's uplink, shape ``(M,)``.
        rtt_ms: RTT from each access point to each node, shape ``(A, M)``; ``inf`` means
            the node is not reachable from that access point.
        wifi_mbps: nominal Wi-Fi rate of each access point, shared ``R/N`` among the
            devices associated with it, shape ``(A,)``.
        cloud_rtt_ms: RTT from each access point to each datacenter, shape ``(A, K)``.
        cloud_inference_ms: constant inference time in any datacenter.
        home_ap_t1: for each access point, the T1 node attached to it or -1, shape ``(A,)``.
        node_ids: optional external names of the nodes.
    """

    tier: IntArray
    slope_ms: FloatArray
    intercept_ms: FloatArray
    compute_ms: FloatArray
    node_bw_mbps: FloatArray
    rtt_ms: FloatArray
    wifi_mbps: FloatArray
    cloud_rtt_ms: FloatArray
    cloud_inference_ms: float = 5.0
    home_ap_t1: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    node_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        m = self.tier.shape[0]
        a = self.wifi_mbps.shape[0]
        for name in ("slope_ms", "intercept_ms", "compute_ms", "node_bw_mbps"):
            if getattr(self, name).shape != (m,):
                raise PlacementError(f"infrastructure field {name} must have shape ({m},)")
        if self.rtt_ms.shape != (a, m):
            raise PlacementError(f"rtt_ms must have shape ({a}, {m}), got {self.rtt_ms.shape}")
        if self.cloud_rtt_ms.ndim != 2 or self.cloud_rtt_ms.shape[0] != a:
            raise PlacementError(f"cloud_rtt_ms must have shape ({a}, K)")
        if np.any(self.slope_ms <= 0):
            raise PlacementError("every queue slope must be positive")
        if np.any(self.node_bw_mbps <= 0) or np.any(self.wifi_mbps <= 0):
            raise PlacementError("bandwidths must be positive")
        if np.any(np.isnan(self.rtt_ms)) or np.any(self.rtt_ms < 0):
            raise PlacementError("RTTs must be non-negative (inf = unreachable)")
        if self.home_ap_t1.shape[0] == 0:
            self.home_ap_t1 = np.full(a, -1, dtype=np.int64)
        if self.node_ids and len(self.node_ids) != m:
            raise PlacementError("node_ids must name every node")

    @property
    def n_nodes(self) -> int:
        return int(self.tier.shape[0])

    @property
    def n_aps(self) -> int:
        return int(self.wifi_mbps.shape[0])

    @property
    def n_clouds(self) -> int:
        return int(self.cloud_rtt_ms.shape[1])

    def queue_model(self, j: int) -> QueueModel:
        return QueueModel(
            float(self.slope_ms[j]), float(self.intercept_ms[j]), float(self.compute_ms[j])
        )

    def maxload(self, eps_t_ms: float) -> IntArray:
        """Most clients each node can hold under ``eps_t_ms`` (inverted queue model)."""
        bound = (eps_t_ms - self.compute_ms - self.intercept_ms) / self.slope_ms
        out = np.floor(bound + 1e-9).astype(np.int64)
        out[self.compute_ms > eps_t_ms] = 0
        return np.maximum(out, 0)

    def tier_counts(self) -> tuple[int, int, int]:
        c = np.bincount(self.tier, minlength=3)
        return int(c[0]), int(c[1]), int(c[2])

    def subset(self, aps: IntArray, nodes: IntArray) -> Infrastructure:
        """The slice seen by one MT solver: some access points and some nodes."""
        remap = np.full(self.n_nodes, -1, dtype=np.int64)
        remap[nodes] = np.arange(nodes.shape[0])
        home = self.home_ap_t1[aps]
        mapped = np.full(home.shape, -1, dtype=np.int64)
        mapped[home >= 0] = remap[home[home >= 0]]
        return Infrastructure(
            tier=self.tier[nodes],
            slope_ms=self.slope_ms[nodes],
            intercept_ms=self.intercept_ms[nodes],
            compute_ms=self.compute_ms[nodes],
            node_bw_mbps=self.node_bw_mbps[nodes],
            rtt_ms=np.ascontiguousarray(self.rtt_ms[np.ix_(aps, nodes)]),
            wifi_mbps=self.wifi_mbps[aps],
            cloud_rtt_ms=self.cloud_rtt_ms[aps],
            cloud_inference_ms=self.cloud_inference_ms,
            home_ap_t1=mapped,
            node_ids=tuple(self.node_ids[k] for k in nodes) if self.node_ids else (),
        )


@dataclass(slots=True)
class Devices:
    """A batch of mobile devices, each with one latency-critical task per frame.

    Attributes:
        ap: access point each device is associated with, shape ``(N,)``.
        phone: phone-class index (for reporting), shape ``(N,)``.
        data_kb: bytes sent per frame (KB), shape ``(N,)``.
        eps_t_ms: latency bound, shape ``(N,)``.
        eps_b_mj: energy bound per frame (the local inference energy by default).
        tx_power: transmission power ``w`` in mJ/ms.
        local_ms, local_mj: time and energy of running the task on the device.
    """

    ap: IntArray
    phone: IntArray
    data_kb: FloatArray
    eps_t_ms: FloatArray
    eps_b_mj: FloatArray
    tx_power: FloatArray
    local_ms: FloatArray
    local_mj: FloatArray

    def __post_init__(self) -> None:
        n = self.ap.shape[0]
        for name in (
            "phone",
            "data_kb",
            "eps_t_ms",
            "eps_b_mj",
            "tx_power",
            "local_ms",
            "local_mj",
        ):
            if getattr(self, name).shape != (n,):
                raise PlacementError(f"device field {name} must have shape ({n},)")
        if np.any(self.data_kb < 0) or np.any(self.tx_power < 0):
            raise PlacementError("data sizes and transmission power must be non-negative")

    @property
    def n(self) -> int:
        return int(self.ap.shape[0])

    def subset(self, idx: IntArray, ap_remap: IntArray | None = None) -> Devices:
        """Some of the devices; ``ap_remap`` maps global AP indices to a slice's."""
        ap = self.ap[idx] if ap_remap is None else ap_remap[self.ap[idx]]
        return Devices(
            ap=ap,
            phone=self.phone[idx],
            data_kb=self.data_kb[idx],
            eps_t_ms=self.eps_t_ms[idx],
            eps_b_mj=self.eps_b_mj[idx],
            tx_power=self.tx_power[idx],
            local_ms=self.local_ms[idx],
            local_mj=self.local_mj[idx],
        )


@dataclass(slots=True)
class Allocation:
    """Where each device's task runs, and what it costs.

    ``target[i]`` is an edge-node index ``>= 0``, :data:`CLOUD` or :data:`LOCAL`;
    ``cloud[i]`` names the datacenter when the target is the cloud (else -1).
    ``latency_ms`` and ``energy_mj`` are the predicted per-frame figures *after* all
    devices were placed (queue times reflect the final loads).
    """

    method: str
    target: IntArray
    cloud: IntArray
    latency_ms: FloatArray
    energy_mj: FloatArray
    local_ms: FloatArray
    local_mj: FloatArray
    loads: IntArray
    maxload: IntArray
    convergence_s: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.target.shape[0])

    @property
    def saved_mj(self) -> FloatArray:
        """Energy saved per frame against local execution (0 for local devices)."""
        return np.where(self.target == LOCAL, 0.0, self.local_mj - self.energy_mj)

    def fraction(self, kind: str) -> float:
        """Share of devices served by ``"edge"``, ``"cloud"`` or ``"local"``."""
        if self.n == 0:
            return 0.0
        if kind == "edge":
            return float(np.mean(self.target >= 0))
        if kind == "cloud":
            return float(np.mean(self.target == CLOUD))
        if kind == "local":
            return float(np.mean(self.target == LOCAL))
        raise PlacementError(f"unknown target kind {kind!r}")

    @property
    def edge_ratio(self) -> float:
        return self.fraction("edge")

    @property
    def mean_latency_ms(self) -> float:
        return float(np.mean(self.latency_ms)) if self.n else 0.0

    def describe(self, i: int) -> str:
        """Human label of device ``i``'s target: ``edge:<j>``, ``cloud:<k>`` or ``local``."""
        t = int(self.target[i])
        if t >= 0:
            return f"edge:{t}"
        if t == CLOUD:
            return f"cloud:{int(self.cloud[i])}"
        return "local"
