"""What the Nimbus placer knows about a site: RTT, bandwidth, queue model, compute time.

:class:`NodeEstimate` is one site's figures as of now; an :class:`Estimates` source gives
them. The controller's live source is :class:`fades.controller.measure.Measurements` (pings
and observed outcomes); :class:`LabelEstimates` reads what the operator wrote in a node's
labels (``rtt_ms``, ``bandwidth_mbps``, ``compute_ms``) and its heartbeat load, for a placer
used without a controller (tests, the pipeline planner) or before anything was measured.

The queue model is the Nimbus one, linear in the clients a site serves:
``queue(c) = max(0, slope*c + intercept)`` with ``c`` counting the new task. Its prior for a
site with ``k`` workers and a service time ``S`` is ``slope = S/k``, ``intercept = -S``:
``k`` tasks run at once, each further one waits ``S/k`` longer (a first-come-first-served
pool of ``k`` workers, seen as a fluid).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from fades.fabric.protocol import NodeInfo

#: assumed when nothing says otherwise
DEFAULT_RTT_MS = 1.0
DEFAULT_BANDWIDTH_MBPS = 1000.0
DEFAULT_COMPUTE_MS = 50.0


@dataclass(slots=True, frozen=True)
class NodeEstimate:
    """One site's figures for one more task (milliseconds, Mbit/s).

    ``clients`` counts the tasks the site serves now (not the new one); ``workers`` is its
    capacity; ``source`` says where the figures come from (``measured``, ``labels``,
    ``prior``); ``unreachable`` is why the site cannot be used now (None: it can).
    """

    rtt_ms: float
    bandwidth_mbps: float
    compute_ms: float
    slope_ms: float
    intercept_ms: float
    clients: int
    workers: int
    jitter_ms: float = 0.0
    source: str = "prior"
    unreachable: str | None = None

    def queue_ms(self, clients: int) -> float:
        """Time a task waits when ``clients`` tasks (it included) are at the site."""
        if clients <= 0:
            return 0.0
        return max(0.0, self.slope_ms * clients + self.intercept_ms)

    def max_clients(self, budget_ms: float) -> int:
        """Most tasks at the site (the new one included) whose wait + compute fits
        ``budget_ms`` (0: not even one)."""
        room = budget_ms - self.compute_ms
        if room < 0:
            return 0
        if self.slope_ms <= 0:
            return 1_000_000
        return max(0, math.floor((room - self.intercept_ms) / self.slope_ms + 1e-9))


def fluid_queue(compute_ms: float, workers: int) -> tuple[float, float]:
    """``(slope, intercept)`` of ``workers`` FIFO workers with service time ``compute_ms``."""
    k = max(1, workers)
    return compute_ms / k, -compute_ms


class Estimates(Protocol):
    """A source of site figures for the placer."""

    def node(self, info: NodeInfo, artifact: str) -> NodeEstimate:
        """Figures of node ``info`` for one more task running ``artifact``."""
        ...

    def cloud(self, artifact: str) -> NodeEstimate | None:
        """Figures of the cloud (the controller's own runner); None: no cloud is offered."""
        ...


def label_ms(info: NodeInfo, key: str, default: float) -> float:
    """A non-negative finite number from a node label, else ``default``."""
    raw = info.labels.get(key)
    try:
        value = float(raw) if raw is not None else default
    except ValueError:
        return default
    return value if math.isfinite(value) and value >= 0 else default


class LabelEstimates:
    """Figures from node labels and heartbeat load (see the module docstring)."""

    def __init__(
        self,
        rtt_ms: float = DEFAULT_RTT_MS,
        compute_ms: float = DEFAULT_COMPUTE_MS,
        bandwidth_mbps: float = DEFAULT_BANDWIDTH_MBPS,
    ) -> None:
        self.rtt_ms = rtt_ms
        self.compute_ms = compute_ms
        self.bandwidth_mbps = bandwidth_mbps

    def node(self, info: NodeInfo, artifact: str) -> NodeEstimate:
        labelled = any(k in info.labels for k in ("rtt_ms", "compute_ms", "bandwidth_mbps"))
        compute = label_ms(info, "compute_ms", self.compute_ms)
        bw = label_ms(info, "bandwidth_mbps", self.bandwidth_mbps) or self.bandwidth_mbps
        slope, intercept = fluid_queue(compute, info.load.capacity)
        return NodeEstimate(
            rtt_ms=label_ms(info, "rtt_ms", self.rtt_ms),
            bandwidth_mbps=bw,
            compute_ms=compute,
            slope_ms=slope,
            intercept_ms=intercept,
            clients=info.load.running + info.load.queued,
            workers=max(1, info.load.capacity),
            source="labels" if labelled else "prior",
        )

    def cloud(self, artifact: str) -> NodeEstimate | None:
        return None
