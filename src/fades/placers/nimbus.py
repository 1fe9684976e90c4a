"""The Nimbus placer: edge node, cloud or the device itself, from predicted latency and energy.

Candidates:

* the **nodes** that are up; for a task that reads a node's data only the nodes holding it
  (data locality stays a hard constraint: :func:`fades.placers.locality.holders`);
* the **cloud** (the controller's runner), for a task that reads no node's data, when the
  controller offers it;
* the **device**, when the task declares one (:class:`fades.task.Device`).

Each offloading candidate ``j`` gets a predicted latency and a device energy::

    L_j = net_dev + RTT_j + transfer_j + queue_j(c_j + 1) + compute_j
    E_j = tx_power * net_dev                    (the radio's time, as in Nimbus)

with ``net_dev = device RTT + input bytes / device uplink`` (0 without a device),
``transfer_j = input bytes / bandwidth_j``, and ``RTT_j``, ``bandwidth_j``, the queue model
and ``compute_j`` from an :class:`~fades.placers.estimates.Estimates` source (measured by the
controller, else node labels). The device itself costs ``local_latency_ms`` and
``local_energy_mj``. The score is ``alpha*L/eps_t + beta*E/eps_b`` (alpha 0.7, beta 0.3, the
Nimbus weights; the energy term only when a device is declared), where ``eps_t`` is the
latency budget (the device's ``budget_ms``, else its local latency; the task's deadline if
sooner; else :attr:`NimbusPlacer.eps_t_ms`) and ``eps_b`` the device's local energy.

An offloading candidate is *within budget* when ``L < eps_t`` and ``E < eps_b``. The lowest
score among those within budget wins, the device included; if none is, the device wins when
declared (Nimbus's fallback), else the lowest score and the reason says so.

**Hysteresis.** Similar tasks (same tenant, function, data selection and device) stick to
the previous choice while it is still within budget unless another candidate's score is
lower by more than :attr:`NimbusPlacer.margin` (default 0.05, about 7% of the budget in
latency), so decisions do not flap as load wiggles. Equal scores go to the site with the
fewest tasks per worker, then by name.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pydantic_core

from fades.fabric.protocol import NodeInfo
from fades.placers.base import Placement, Site
from fades.placers.estimates import Estimates, LabelEstimates, NodeEstimate
from fades.placers.locality import holders, locality_reason
from fades.task import Task

#: candidates (best first; the chosen one, the cloud and the device always) and rejected
#: sites listed one by one in a decision (the rest are counted)
MAX_LISTED = 20
#: similar-task keys remembered for hysteresis (least recently used forgotten first)
MAX_REMEMBERED = 4096


@dataclass(slots=True)
class Candidate:
    """One site's prediction for a task."""

    target: str
    where: Site
    latency_ms: float
    energy_mj: float | None
    parts: dict[str, float]
    clients: int = 0
    load: float = 0.0  # clients per worker: breaks ties between equal scores
    source: str = ""
    score: float = 0.0
    within: bool = True
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "target": self.target,
            "where": self.where,
            "latency_ms": round(self.latency_ms, 3),
            "energy_mj": None if self.energy_mj is None else round(self.energy_mj, 3),
            "score": round(self.score, 4),
            "within_budget": self.within,
            "parts_ms": {k: round(v, 3) for k, v in self.parts.items()},
        }
        if self.where != "device":
            out["clients"] = self.clients
            out["source"] = self.source
        if self.note:
            out["note"] = self.note
        return out


def input_bytes(task: Task) -> int:
    """Bytes the task carries to where it runs (its inline inputs and params, as JSON)."""
    size = 0
    if task.inputs:
        size += len(pydantic_core.to_json(task.inputs))
    if task.function.params:
        size += len(pydantic_core.to_json(task.function.params))
    return size


def _ms(nbytes: int, mbps: float) -> float:
    """Milliseconds to send ``nbytes`` at ``mbps`` Mbit/s."""
    return nbytes * 8 / (mbps * 1000.0) if mbps > 0 else math.inf


@dataclass(slots=True)
class NimbusPlacer:
    """Nimbus scoring over nodes, the cloud and the device (see the module docstring).

    Args:
        eps_t_ms: latency budget of a task that declares neither a device nor a deadline.
        alpha, beta: weights of latency and device energy in the score.
        margin: hysteresis: a new site must beat the previous one's score by this much.
        estimates: where site figures come from (default: node labels and heartbeats;
            the controller attaches its measurements).
        cloud: offer the cloud for tasks that read no node's data (the controller sets it).
    """

    eps_t_ms: float = 1000.0
    alpha: float = 0.7
    beta: float = 0.3
    margin: float = 0.05
    estimates: Estimates = field(default_factory=LabelEstimates)
    cloud: bool = False
    name: str = "nimbus"
    _previous: OrderedDict[tuple[str, ...], str] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.eps_t_ms) and self.eps_t_ms > 0):
            raise ValueError(f"eps_t_ms must be a positive number, not {self.eps_t_ms!r}")
        if not (self.alpha >= 0 and self.beta >= 0 and self.alpha + self.beta > 0):
            raise ValueError("alpha and beta must be >= 0 and not both 0")
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"margin must be a number >= 0, not {self.margin!r}")

    def attach(self, estimates: Estimates, *, cloud: bool = True) -> None:
        """Use ``estimates`` (the controller's measurements); offer the cloud if ``cloud``."""
        self.estimates = estimates
        self.cloud = cloud

    # --- the decision ----------------------------------------------------------------------
    def budget(self, task: Task, now: float | None = None) -> float:
        """``eps_t`` of ``task`` in ms (see the module docstring)."""
        dev = task.device
        eps = self.eps_t_ms
        if dev is not None:
            eps = dev.budget_ms if dev.budget_ms is not None else dev.local_latency_ms
        if task.credentials.deadline is not None:
            now = time.time() if now is None else now
            left = (task.credentials.deadline - datetime.fromtimestamp(now, UTC)).total_seconds()
            eps = min(eps, max(1.0, left * 1000.0))
        return eps

    def candidates(
        self, task: Task, sites: Sequence[NodeInfo], eps_t: float, nbytes: int | None = None
    ) -> tuple[list[Candidate], list[tuple[str, str]]]:
        """Predictions for every usable site, and the sites refused with the reason."""
        dev = task.device
        nbytes = input_bytes(task) if nbytes is None else nbytes
        net_dev = dev.rtt_ms + _ms(nbytes, dev.uplink_mbps) if dev is not None else 0.0
        energy = dev.tx_power_w * net_dev if dev is not None else None
        artifact = task.function.artifact
        out: list[Candidate] = []
        refused: list[tuple[str, str]] = []

        def add(target: str, where: Site, est: NodeEstimate) -> None:
            if est.unreachable is not None:
                refused.append((target, est.unreachable))
                return
            transfer = _ms(nbytes, est.bandwidth_mbps) if where == "edge" else 0.0
            queue = est.queue_ms(est.clients + 1)
            parts = {
                "device": net_dev,
                "rtt": est.rtt_ms,
                "transfer": transfer,
                "queue": queue,
                "compute": est.compute_ms,
            }
            c = Candidate(target, where, sum(parts.values()), energy, parts, est.clients)
            c.source = est.source
            c.load = est.clients / max(1, est.workers)
            fixed = net_dev + est.rtt_ms + transfer
            fit = est.max_clients(eps_t - fixed)
            if est.clients + 1 > fit:
                c.note = f"at capacity: {est.clients} task(s) there, {fit} fit the budget"
            out.append(c)

        for info in sites:
            add(info.name, "edge", self.estimates.node(info, artifact))
        if self.cloud and not task.data:
            cloud = self.estimates.cloud(artifact)
            if cloud is not None:
                add("cloud", "cloud", cloud)
        if dev is not None:
            local = {"local": dev.local_latency_ms}
            out.append(
                Candidate(dev.name, "device", dev.local_latency_ms, dev.local_energy_mj, local)
            )
        eps_b = dev.local_energy_mj if dev is not None else None
        for c in out:
            e_term = c.energy_mj / eps_b if (eps_b and c.energy_mj is not None) else 0.0
            c.score = self.alpha * c.latency_ms / eps_t + self.beta * e_term
            if c.where != "device":
                c.within = c.latency_ms < eps_t and (eps_b is None or (c.energy_mj or 0) < eps_b)
        return out, refused

    def place(self, task: Task, up: Sequence[NodeInfo], down: Sequence[NodeInfo] = ()) -> Placement:
        t0, c0 = time.perf_counter(), time.thread_time()
        if task.data:
            sites = holders(task, up, down)  # NoPlacement when no up node holds the data
            held = {n.name for n in sites}
            others = [(n.name, "does not hold the task's data") for n in up if n.name not in held]
        else:
            sites, others = list(up), []
            if not sites and task.device is None and not self.cloud:
                holders(task, up, down)  # raises NoPlacement: no node is up
        eps_t = self.budget(task)
        nbytes = input_bytes(task)
        cands, refused = self.candidates(task, sites, eps_t, nbytes)
        refused = [*refused, *others, *((n.name, "down") for n in down)]
        if not cands:  # no site reachable; no device, no cloud
            from fades.errors import NoPlacement

            why = "; ".join(f"{t}: {r}" for t, r in refused[:3]) or "no node is up"
            raise NoPlacement(f"cannot place task: no site can take it ({why})", task_id=task.id)
        pool = [c for c in cands if c.within]
        device = [c for c in cands if c.where == "device"]
        fallback = ""
        if not pool:
            pool = device or cands
            fallback = "no offloading site within budget" + (
                ": run on the device" if device else "; the best still wins"
            )
        best = min(pool, key=lambda c: (c.score, c.load, c.target))
        best, held_note = self._hysteresis(task, cands, pool, best)
        ranked = sorted(cands, key=lambda c: (c.score, c.target))
        listed = ranked[:MAX_LISTED]
        if best not in listed:
            listed.append(best)
        listed += [c for c in ranked[MAX_LISTED:] if c.where != "edge" and c is not best]
        took_ms = (time.perf_counter() - t0) * 1000.0
        cpu_ms = (time.thread_time() - c0) * 1000.0
        decision = {
            "placer": self.name,
            "where": best.where,
            "target": best.target,
            "eps_t_ms": round(eps_t, 3),
            "eps_b_mj": task.device.local_energy_mj if task.device else None,
            "alpha": self.alpha,
            "beta": self.beta,
            "input_bytes": nbytes,
            "candidates": [c.as_json() for c in listed],
            "candidates_more": len(cands) - len(listed),
            "rejected": [{"target": t, "reason": r} for t, r in refused[:MAX_LISTED]],
            "rejected_more": max(0, len(refused) - MAX_LISTED),
            "hysteresis": held_note,
            "fallback": fallback,
            "decision_ms": round(took_ms, 3),
            "decision_cpu_ms": round(cpu_ms, 3),
        }
        return Placement(
            best.target,
            self._reason(task, best, len(cands), held_note, fallback),
            best.where,
            decision,
        )

    def _hysteresis(
        self, task: Task, cands: list[Candidate], pool: list[Candidate], best: Candidate
    ) -> tuple[Candidate, str]:
        sel = json.dumps([op.model_dump(mode="json") for op in task.data], sort_keys=True)
        key = (task.tenant, task.function.artifact, sel, task.device.name if task.device else "")
        prev_name = self._previous.get(key)
        note = ""
        if prev_name is not None and prev_name != best.target:
            prev = next((c for c in pool if c.target == prev_name), None)
            if prev is not None and best.score > prev.score - self.margin:
                note = (
                    f"kept {prev_name} (score {prev.score:.3f}): {best.target} "
                    f"({best.score:.3f}) does not beat it by the margin {self.margin:g}"
                )
                best = prev
            elif prev is not None:
                note = f"switched from {prev_name}: beaten by more than {self.margin:g}"
            else:
                note = f"previous choice {prev_name} is no longer a candidate within budget"
        self._previous[key] = best.target
        self._previous.move_to_end(key)
        while len(self._previous) > MAX_REMEMBERED:
            self._previous.popitem(last=False)
        return best, note

    def _reason(self, task: Task, best: Candidate, n: int, held: str, fallback: str) -> str:
        head = {"edge": f"node {best.target}", "cloud": "the cloud", "device": "run locally"}
        why = f"nimbus: {head[best.where]}, predicted {best.latency_ms:.1f} ms"
        if best.energy_mj is not None:
            why += f" / {best.energy_mj:.1f} mJ"
        why += f", score {best.score:.3f}, best of {n} candidate(s)"
        if task.data:
            why = f"{locality_reason(task)}; {why}"
        for extra in (fallback, held):
            if extra:
                why += f"; {extra}"
        return why
