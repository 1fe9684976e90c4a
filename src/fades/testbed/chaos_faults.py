"""The fault kinds of a chaos run (:mod:`fades.testbed.chaos`): each injects one fault into a
:class:`~fades.cluster.LocalCluster` and heals it, recording what it did in a
:class:`FaultRecord` (the process ids killed and started, how long it took to come back).

A new kind is one function ``(cluster, rng, record) -> None`` and an entry in :data:`FAULTS`
saying whether a cluster offers it.
"""

from __future__ import annotations

import functools
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fades.cluster import LocalCluster


@dataclass
class FaultRecord:
    kind: str
    target: str
    at_s: float
    pid: int | None = None
    new_pid: int | None = None
    back_s: float | None = None
    error: str | None = None


def _kill(proc: subprocess.Popen[bytes]) -> int:
    pid = proc.pid
    if proc.poll() is None:
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    return pid


def _wait(cond: Callable[[], bool], timeout: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.1)
    return None


def _ready_lines(cluster: LocalCluster, label: str, text: str) -> int:
    log = cluster.home / "logs" / f"{label}.log"
    return log.read_text(errors="replace").count(text) if log.exists() else 0


def _up_or_exited(
    cluster: LocalCluster, name: str, before: int, proc: subprocess.Popen[bytes]
) -> bool:
    return _ready_lines(cluster, name, f"node {name} ready") > before or proc.poll() is not None


#: starts of a killed node agent before the fault is recorded as not healed
NODE_STARTS = 3


def fault_node(cluster: LocalCluster, rng: random.Random, rec: FaultRecord) -> None:
    """kill -9 a node agent, start it again, wait for its 'ready' line."""
    name = rng.choice(cluster.names)
    rec.target = name
    before = _ready_lines(cluster, name, f"node {name} ready")
    rec.pid = _kill(cluster.procs[name])
    t0 = time.monotonic()
    for attempt in range(1, NODE_STARTS + 1):  # as a supervisor would: start it again
        cluster.start_node(name)
        proc = cluster.procs[name]
        rec.new_pid = proc.pid
        _wait(functools.partial(_up_or_exited, cluster, name, before, proc), 120)
        if _ready_lines(cluster, name, f"node {name} ready") > before:
            rec.back_s = time.monotonic() - t0
            if attempt > 1:
                rec.error = f"started {attempt} times (the earlier ones exited at start)"
            return
    rec.error = f"node {name} did not come back after {NODE_STARTS} starts"


def _controller_labels(cluster: LocalCluster) -> list[str]:
    return sorted(p for p in cluster.procs if p.startswith("controller"))


def fault_controller(cluster: LocalCluster, rng: random.Random, rec: FaultRecord) -> None:
    """kill -9 a controller process, start it again, wait for it to answer."""
    label = rng.choice(_controller_labels(cluster))
    rec.target = label
    rec.pid = _kill(cluster.procs[label])
    i = int(label.removeprefix("controller") or 1)
    cluster.start_controller(i)
    rec.new_pid = cluster.procs[label].pid
    t0 = time.monotonic()
    cluster.wait_controller(timeout=120, i=i)
    rec.back_s = time.monotonic() - t0


def fault_hub(cluster: LocalCluster, rng: random.Random, rec: FaultRecord) -> None:
    """kill -9 one NATS server of the hub (the only one with ``hub=1``) and start it again;
    ``back_s`` ends once it has caught up with the streams it keeps a copy of."""
    i = rng.randrange(len(cluster.hub.servers)) + 1
    server = cluster.hub.server(i)
    rec.target = server.name
    rec.pid = server.proc.pid if server.proc is not None else None
    cluster.hub.kill(i)
    t0 = time.monotonic()
    cluster.hub.start_server(i, timeout=120)
    rec.back_s = time.monotonic() - t0
    rec.new_pid = server.proc.pid if server.proc is not None else None


def fault_uplink(cluster: LocalCluster, rng: random.Random, rec: FaultRecord) -> None:
    """Cut one site's uplink for ``outage_s`` seconds (passed in ``rec.back_s``), restore."""
    site = rng.choice(cluster.names)
    rec.target = site
    outage = rec.back_s or 5.0
    sites: Any = cluster  # cut_uplink / restore_uplink: LocalCluster(sites=True)
    sites.cut_uplink(site)
    time.sleep(outage)
    sites.restore_uplink(site)


#: fault kind -> (does this cluster offer it, inject-and-heal)
FAULTS: dict[str, tuple[Callable[[LocalCluster], bool], Callable[..., None]]] = {
    "node": (lambda c: True, fault_node),
    "controller": (lambda c: True, fault_controller),
    "hub": (lambda c: True, fault_hub),
    "uplink": (lambda c: bool(c.use_sites and hasattr(c, "cut_uplink")), fault_uplink),
}
