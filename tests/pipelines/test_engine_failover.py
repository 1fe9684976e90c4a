"""A node-agent process SIGKILLed mid-stream: once the plan names a substitute, the runs carry
on from the durable bundles, none lost and no finale duplicated."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.pipelines.test_engine import FUNCS, agents, chain, harness, make_plan, run, wait_for

from fades.fabric import EmbeddedNats

FADES = str(Path(sys.executable).parent / "fades")
RUNS = 30


def start_node_process(name: str, home: Path, url: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [FADES, "node", "start", "--name", name, "--nats", url, "--data", str(home),
         "--heartbeat", "0.5", "--no-ingest", "--capacity", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until ready (or the process dies)
    if line.strip() != f"node {name} ready":
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"node did not start: {line!r} {err}")
    return proc


def test_a_killed_node_is_substituted_and_no_run_is_lost_or_duplicated(
    nats_server: EmbeddedNats, prepare_home: Callable[..., Path]
) -> None:
    homes = {n: prepare_home(n, functions=FUNCS, readings=False) for n in ("n1", "n2", "n3")}

    async def main() -> None:
        async with (
            harness(nats_server) as h,
            agents(nats_server, {"n1": homes["n1"], "n3": homes["n3"]}),
        ):
            plan = make_plan("abc", chain(), {"a": "n1", "b": "n2", "c": "n1"})
            await h.put_plan(plan)
            proc = start_node_process("n2", homes["n2"], nats_server.url)
            try:
                for i in range(RUNS):
                    await h.trigger(plan, f"r{i}")
                    if i == RUNS // 3:  # some runs are through n2 by now
                        await h.events.wait("b on n2", stage="b", status="done", timeout=60)
                        os.kill(proc.pid, signal.SIGKILL)
                        proc.wait(timeout=10)
                    await asyncio.sleep(0.05)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            substitute = make_plan("abc", chain(), {"a": "n1", "b": "n3", "c": "n1"}, version=2)
            await h.put_plan(substitute)

            def finished() -> bool:
                return len({e.run for e in h.events.of(stage="c", status="done")}) == RUNS

            await wait_for(finished, 120, f"{RUNS} finales; seen {h.events.brief()}")
            await asyncio.sleep(1.0)
            finales = [e.run for e in h.events.of(stage="c")]
            assert sorted(finales) == sorted(f"r{i}" for i in range(RUNS))  # once each
            assert {e.node for e in h.events.of(stage="b", status="done")} == {"n2", "n3"}

    run(main())
