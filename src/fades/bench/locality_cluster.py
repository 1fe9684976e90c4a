"""The cluster of the locality benchmark (:mod:`fades.bench.locality`) and one task's round
trip: a :class:`~fades.cluster.LocalCluster` with its cloud side in a :class:`Topology`, the
upload of the artifacts from the cloud side, and a task submitted, waited for and checked.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fades.bench.link import CappedLink
from fades.bench.payloads import SENSORS, TENANT, Payload
from fades.client import FadesClient
from fades.cluster import LocalCluster
from fades.errors import FabricError, FadesError
from fades.functions.keys import SigningKey

NODE = "edge1"


@dataclass
class Plan:
    sizes: list[Payload]
    reps: int
    fn_digest: str
    artifacts: list[Path]
    up_mbit: float
    key: SigningKey
    rows: int


# Run inside the cloud namespace: upload artifact files to the controller (an artifact the
# repository already holds, HTTP 409, is fine).
_UPLOAD = """
import sys
from pathlib import Path
from fades.client import FadesClient
from fades.errors import FadesError
url, token = sys.argv[1], sys.argv[2]
with FadesClient(url, token, timeout=300) as client:
    for path in sys.argv[3:]:
        try:
            client.upload(Path(path))
        except FadesError as exc:
            if exc.context.get("status") != 409:
                sys.exit(f"upload of {path} failed: {exc.kind}: {exc}")
"""


# --- the cluster ---------------------------------------------------------------------------
@dataclass
class Topology:
    """Where the cloud side runs: its address and how to start a command there."""

    name: str
    cloud_host: str
    wrap: Callable[[list[str]], list[str]]
    link: CappedLink | None = None


def make_cluster(topo: Topology, plan: Plan, work: Path, node_src: Path) -> LocalCluster:
    """A :class:`~fades.cluster.LocalCluster` with nats-server and the controller on the
    cloud side of ``topo`` and one node agent (no MQTT ingest) on the edge, holding the
    readings in ``node_src``. Functions are uploaded by :func:`upload` from the cloud side."""

    def node_data(name: str, home: Path) -> int:
        shutil.copy(node_src / "readings.db", home / "readings.db")
        return plan.rows

    capped = topo.link is not None
    return LocalCluster(
        work / topo.name,
        nodes=1,
        rooms_per_node=1,
        sensors=False,
        ingest=False,
        functions=False,
        heartbeat_s=2.0,
        down_after_s=10.0,
        host=topo.cloud_host,
        # a fresh namespace has every port free; free_port() cannot look inside it
        nats_port=4222 if capped else None,
        http_port=8080 if capped else None,
        wrap=topo.wrap if capped else None,
        key=plan.key,
        node_data=node_data,
    )


def upload(cluster: LocalCluster, topo: Topology, artifacts: list[Path]) -> None:
    """Upload the artifacts from the cloud side (the runtime never crawls up the uplink)."""
    cmd = [sys.executable, "-c", _UPLOAD, cluster.url, cluster.token, *map(str, artifacts)]
    up = subprocess.run(
        topo.wrap(cmd),
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if up.returncode != 0:
        raise FabricError(f"function upload failed: {(up.stderr or up.stdout).strip()}")


# --- one task --------------------------------------------------------------------------------
def wait_node_up(client: FadesClient, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    seen: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(FadesError):  # the controller may still be starting
            seen = client.nodes()
            if any(n.get("name") == NODE and n.get("up") for n in seen):
                return
        time.sleep(0.5)
    raise FabricError(f"node {NODE} not up at the controller after {timeout} s: {seen}")


def run_task(
    client: FadesClient, task: dict[str, Any], where: str, timeout: float
) -> dict[str, Any]:
    """Submit ``task`` to the node (edge) or the cloud and wait for it to finish."""
    t0 = time.perf_counter()
    tid = client.submit(task, node=NODE, where=where)["task_id"]
    info = client.wait(tid, timeout=timeout)
    if info.get("status") not in ("done", "failed"):
        raise FabricError(f"task {tid} ({where}) did not finish in {timeout:.0f} s: {info}")
    info["client_wall_s"] = time.perf_counter() - t0
    return info


def make_task(payload: Payload, fn_digest: str) -> dict[str, Any]:
    return {
        "credentials": {"tenant": TENANT},
        "data": payload.ops(),
        "function": {"artifact": fn_digest, "memory_mib": 128, "time_budget_ms": 600_000},
    }


def check_result(info: dict[str, Any], payload: Payload) -> None:
    """The function really saw every reading (and the task did not fail)."""
    if info.get("status") != "done":
        raise FabricError(
            f"task {info.get('task_id')} ({info.get('where')}) failed: "
            f"{info.get('error_kind')}: {info.get('error')}"
        )
    result = info.get("result") or {}
    counts = {s: (result.get(s) or {}).get("count") for s in SENSORS}
    if any(c != payload.per_sensor for c in counts.values()):
        raise FabricError(f"task {info.get('task_id')} counted {counts}, not {payload.per_sensor}")
