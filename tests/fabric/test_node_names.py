"""A node agent does not start under the name of a node that is still running (it would share
that node's tasks, and its stop would mark the running one down); after a ``kill -9`` the
name is free again once the dead holder's entry has gone quiet."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fades.fabric import EmbeddedNats

from .test_agent import COUNT, FADES, HB, MEM, fabric, publish_task, start_node_process


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


def test_a_second_agent_under_a_running_nodes_name_is_refused_and_the_first_keeps_serving(
    nats_server: EmbeddedNats,
    prepare_home: Callable[..., Path],
    make_task: Callable[..., dict[str, Any]],
) -> None:
    first_home = prepare_home("first", functions={"count": COUNT})
    other_home = prepare_home("other", functions={"count": COUNT})
    first = start_node_process(first_home, nats_server.url)
    try:
        impostor = subprocess.run(
            [FADES, "node", "start", "--name", "edge1", "--nats", nats_server.url,
             "--data", str(other_home), "--heartbeat", str(HB), "--no-ingest"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert impostor.returncode == 2, impostor
        lines = impostor.stderr.strip().splitlines()
        assert len(lines) == 1 and "node edge1 is already running" in lines[0], impostor.stderr
        assert "another --name" in lines[0]
        assert "Traceback" not in impostor.stderr

        async def served() -> str:
            async with fabric(nats_server) as (_, js, results):
                task = make_task("count", task_id="after-impostor", memory_mib=MEM)
                await publish_task(js, "edge1", task)
                return (await results.wait("after-impostor", timeout=60)).status

        assert asyncio.run(served()) == "done"  # the running node still takes its tasks
        assert first.poll() is None
    finally:
        _stop(first)


def test_the_name_of_a_killed_node_is_taken_by_its_replacement(
    nats_server: EmbeddedNats, prepare_home: Callable[..., Path]
) -> None:
    home = prepare_home("n1", functions={"count": COUNT})
    old = start_node_process(home, nats_server.url)
    os.kill(old.pid, signal.SIGKILL)
    old.wait(timeout=30)
    # at once, while its last entry is still fresh: the new one watches it go quiet, then starts
    replacement = start_node_process(
        prepare_home("n2", functions={"count": COUNT}), nats_server.url
    )
    try:
        assert replacement.poll() is None
    finally:
        replacement.send_signal(signal.SIGTERM)
        replacement.wait(timeout=60)
