"""A starting cluster waits for its hub and tries a part that dies at start again, instead of
stopping everything (``fades up --hub 3 --controllers 2`` once failed at start with an
object store TimeoutError). Real nats-servers, real node processes."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

from fades.cluster import LocalCluster
from fades.cluster_start import wait_fabric
from fades.fabric.hub import EmbeddedHub


async def _replicas_of(url: str, stream: str) -> int:
    import nats

    nc = await nats.connect(servers=url.split(","))
    try:
        info = await nc.jetstream().stream_info(stream)
        return int(info.config.num_replicas or 1)
    finally:
        await nc.close()


def test_the_shared_streams_wait_for_a_hub_that_cannot_create_them_yet(tmp_path: Path) -> None:
    hub = EmbeddedHub(tmp_path / "nats", n=3).start()
    try:
        stopped = [s.proc.pid for s in hub.servers[1:] if s.proc is not None]
        for pid in stopped:  # two of three servers frozen: no quorum, nothing can be created
            os.kill(pid, signal.SIGSTOP)
        said: list[str] = []

        def thaw() -> None:
            deadline = time.monotonic() + 120
            while not said and time.monotonic() < deadline:  # the first attempt failed
                time.sleep(0.1)
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)

        thread = threading.Thread(target=thaw, daemon=True)
        thread.start()
        try:
            attempts = wait_fabric(hub.servers[0].url, 3, said.append, timeout=150)
        finally:
            thread.join(130)
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
        assert attempts > 1, said
        assert "hub: JetStream not ready yet" in said[0], said
        # the repository's object store exists, with three copies
        assert asyncio.run(_replicas_of(hub.url, "OBJ_fades_artifacts")) == 3
    finally:
        hub.stop()


def test_a_node_that_dies_while_the_cluster_starts_is_started_again(tmp_path: Path) -> None:
    said: list[str] = []
    cluster = LocalCluster(
        tmp_path / "up", nodes=1, days=0.02, sensors=False, functions=False, say=said.append
    )
    cluster.prepare()
    killed: list[int] = []

    def kill_first_node() -> None:  # SIGKILL edge1 as soon as it is spawned, once
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            proc = cluster.procs.get("edge1")
            if proc is not None:
                proc.kill()
                killed.append(proc.pid)
                return
            time.sleep(0.005)

    thread = threading.Thread(target=kill_first_node, daemon=True)
    thread.start()
    try:
        cluster.start()
        thread.join(10)
        assert killed, "the node was never spawned"
        assert any("edge1 exited with -9 while starting" in line for line in said), said
        assert "nodes up: edge1" in said
        assert cluster.procs["edge1"].pid != killed[0]
        assert [n["name"] for n in cluster.client().nodes() if n["up"]] == ["edge1"]
    finally:
        cluster.stop()
