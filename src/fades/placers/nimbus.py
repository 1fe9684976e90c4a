"""A Nimbus-scored placer: data locality first, then the Nimbus objective among the holders.

Among the up nodes that hold the task's data (:func:`fades.placers.locality.holders`), each
node ``j`` gets a predicted latency from what its heartbeat says::

    L_j = RTT_j + TET_j + q_j(load_j + 1)

* ``RTT_j``: the node's ``rtt_ms`` label (what the operator measured), else ``rtt_ms``;
* ``TET_j``: the node's ``compute_ms`` label, else ``compute_ms`` (the expected run time);
* ``q_j``: the queue the task would see: :func:`fades.placement.model.queue_time` with a
  slope of ``TET_j / capacity_j`` over ``running + queued + 1`` tasks.

The node with the lowest :func:`fades.placement.nimbus.nimbus_score`
(``alpha*L/eps_t + beta*load/capacity``) among those with ``L < eps_t`` wins; if none meets
``eps_t``, the lowest score still wins and the reason says so (the controller has no cloud
fallback for edge tasks: ``where=cloud`` is the caller's choice).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fades.fabric.protocol import NodeInfo
from fades.placement.model import FloatArray, queue_time
from fades.placement.nimbus import nimbus_score
from fades.placers.base import Placement
from fades.placers.locality import holders, locality_reason
from fades.task import Task


def _label_ms(node: NodeInfo, key: str, default: float) -> float:
    raw = node.labels.get(key)
    try:
        value = float(raw) if raw is not None else default
    except ValueError:
        return default
    return value if math.isfinite(value) and value >= 0 else default


@dataclass(slots=True)
class NimbusPlacer:
    """Nimbus scoring over the data holders (see the module docstring)."""

    eps_t_ms: float = 1000.0
    alpha: float = 0.5
    beta: float = 0.5
    rtt_ms: float = 1.0
    compute_ms: float = 50.0
    name: str = "nimbus"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.eps_t_ms) and self.eps_t_ms > 0):
            raise ValueError(f"eps_t_ms must be a positive number, not {self.eps_t_ms!r}")
        if self.alpha < 0 or self.beta < 0 or self.alpha + self.beta <= 0:
            raise ValueError("alpha and beta must be >= 0 and not both 0")

    def latency_ms(self, nodes: Sequence[NodeInfo]) -> FloatArray:
        """Predicted latency (ms) of one more task on each node."""
        rtt = np.array([_label_ms(n, "rtt_ms", self.rtt_ms) for n in nodes])
        tet = np.array([_label_ms(n, "compute_ms", self.compute_ms) for n in nodes])
        cap = np.array([max(1, n.load.capacity) for n in nodes], dtype=float)
        clients = np.array([n.load.running + n.load.queued + 1 for n in nodes], dtype=float)
        out: FloatArray = rtt + tet + queue_time(tet / cap, np.zeros(len(nodes)), clients)
        return out

    def place(self, task: Task, up: Sequence[NodeInfo], down: Sequence[NodeInfo] = ()) -> Placement:
        found = sorted(holders(task, up, down), key=lambda n: n.name)
        lat = self.latency_ms(found)
        load = np.array([n.load.running + n.load.queued for n in found], dtype=float)
        cap = np.array([max(1, n.load.capacity) for n in found], dtype=float)
        score = nimbus_score(lat, self.eps_t_ms, load, cap, self.alpha, self.beta)
        feasible = lat < self.eps_t_ms
        pool = np.flatnonzero(feasible) if feasible.any() else np.arange(len(found))
        best = int(pool[np.argmin(score[pool])])  # argmin keeps the first (by name) on ties
        why = (
            f"{locality_reason(task)}; nimbus score {score[best]:.3f} "
            f"(predicted {lat[best]:.1f} ms) best of {len(found)} holder(s)"
        )
        if not feasible.any():
            why += f"; none predicted under eps_t {self.eps_t_ms:g} ms"
        return Placement(found[best].name, why)
