"""A cluster whose start fails half-way stops what it had started: no controller, node agent
or nats-server is left running (a test fixture that crashed in start() once left three
processes behind, which later joined another cluster on the same port)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fades.cluster import LocalCluster


class Broken(LocalCluster):
    def wait_nodes(self, names: list[str] | None = None, timeout: float = 60.0) -> None:
        self.started = {label: p.pid for label, p in self.procs.items()}
        self.started |= {s.name: s.proc.pid for s in self.hub.servers if s.proc is not None}
        raise RuntimeError("boom while starting")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie not yet reaped counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_a_start_that_fails_half_way_leaves_nothing_running(tmp_path: Path) -> None:
    cluster = Broken(tmp_path / "c", nodes=1, days=0.02, sensors=False, heartbeat_s=0.5)
    cluster.prepare()
    with pytest.raises(RuntimeError, match="boom while starting"):
        cluster.start()
    started = cluster.started
    assert any(k.startswith("controller") for k in started) and "edge1" in started, started
    assert not [label for label, pid in started.items() if _alive(pid)]
    # and the folder is free for the next start
    again = LocalCluster(tmp_path / "c", nodes=1, days=0.02, sensors=False, heartbeat_s=0.5)
    with again:
        assert again.client().nodes()
