"""The node agent against a real nats-server, real wasmtime and real SQLite.

The controller is not involved: tests publish TaskEnvelopes to FADES_TASKS, put artifacts
with ArtifactRepository and read Outcomes from FADES_RESULTS themselves.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.client import JetStreamContext
from tests.waiting import await_until as wait_for

from fades.bus.nats import NatsBus
from fades.errors import AccessDenied, FabricError
from fades.fabric import EmbeddedNats, FabricSettings, connect
from fades.fabric.protocol import NodeInfo, QueryRequest, TaskEnvelope, decode_query_reply
from fades.fabric.repository import ArtifactRepository
from fades.fabric.streams import ensure_streams, nodes_bucket
from fades.fabric.subjects import RESULTS_STREAM, TASKS_STREAM, ping_subject, query_subject
from fades.functions.artifact import Artifact, canonical, sha256_hex
from fades.functions.build import build_python
from fades.functions.keys import SigningKey
from fades.node.agent import NodeAgent
from fades.node.taskstore import TaskRecord, TaskStore
from fades.outcome import Outcome
from fades.sandbox.wire import encode
from fades.task import DataOp

HB = 0.2
MEM = 32

COUNT = """
def main(data, params):
    return {"n": len(data["t"]), "tag": params.get("tag")}
"""

SLOW = """
import time

def main(data, params):
    end = time.monotonic() + params["seconds"]
    while time.monotonic() < end:
        pass
    return {"n": len(data["t"]), "slept": params["seconds"]}
"""


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def build(tmp: Path, name: str, source: str, key: SigningKey) -> Artifact:
    src = tmp / "src" / f"{name}.py"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(textwrap.dedent(source).lstrip())
    return build_python(src, key=key)


def artifact_files(home: Path) -> set[str]:
    return {p.stem for p in (home / "artifacts").glob("*.fart")}


def hexof(art: Artifact) -> str:
    return art.digest.removeprefix("sha256:")


async def publish_task(
    js: JetStreamContext,
    node: str,
    task: dict[str, Any],
    msg_id: str | None = None,
    digest: str | None = None,
) -> str:
    tid = str(task["credentials"]["task_id"])
    env = TaskEnvelope(task=task, submitted_at=time.time(), digest=digest)
    await js.publish(
        f"fades.task.{node}", env.encode(), headers={"Nats-Msg-Id": msg_id or tid}, timeout=5
    )
    return tid


class Results:
    """A pull consumer on FADES_RESULTS, like the controller's; keeps every message seen."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self.sub: Any = None
        self.seen: list[Outcome] = []

    async def open(self) -> Results:
        await ensure_streams(NatsBus(self.js._nc))
        cfg = ConsumerConfig(durable_name="test-results", ack_policy=AckPolicy.EXPLICIT)
        self.sub = await self.js.pull_subscribe(
            "fades.result.>", durable="test-results", stream=RESULTS_STREAM, config=cfg
        )
        return self

    async def poll(self, timeout: float = 0.3) -> None:
        try:
            msgs = await self.sub.fetch(16, timeout=timeout)
        except TimeoutError:
            return
        for m in msgs:
            self.seen.append(Outcome.decode(m.data))
            await m.ack()

    async def wait(self, task_id: str, timeout: float = 30.0) -> Outcome:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in self.seen:
                if r.task_id == task_id:
                    return r
            await self.poll()
        raise AssertionError(f"no result for {task_id} within {timeout} s; saw {self.seen}")

    def count(self, task_id: str) -> int:
        return sum(r.task_id == task_id for r in self.seen)


@asynccontextmanager
async def fabric(server: EmbeddedNats) -> AsyncIterator[tuple[NATS, JetStreamContext, Results]]:
    nc = await connect(server.url, name="test")
    js = nc.jetstream()
    results = await Results(js).open()
    try:
        yield nc, js, results
    finally:
        await nc.close()


@asynccontextmanager
async def running_agent(
    home: Path, server: EmbeddedNats, name: str = "edge1", **kw: Any
) -> AsyncIterator[NodeAgent]:
    kw.setdefault("ingest", False)
    agent = NodeAgent(name, home, FabricSettings(server.url), heartbeat_s=HB, **kw)
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()


async def open_repo(js: JetStreamContext) -> ArtifactRepository:
    """The repository through a Bus over the test's own connection (closed by fabric())."""
    return await ArtifactRepository.open(NatsBus(js._nc))


async def registry_entry(js: JetStreamContext, name: str) -> NodeInfo:
    kv = await nodes_bucket(NatsBus(js._nc))
    entry = await kv.get(name)
    return NodeInfo.decode(entry.value if entry is not None else b"")


async def sweeps(js: Any, node: str, n: int, timeout: float = 30.0) -> None:
    """Wait until the node's registry entry shows ``n + 1`` more heartbeats: every beat
    that succeeds is followed by an outbox sweep, so at least ``n`` sweeps have finished."""
    start = (await registry_entry(js, node)).seq

    async def swept() -> bool:
        return (await registry_entry(js, node)).seq >= start + n + 1

    await wait_for(swept, timeout, f"{n} outbox sweeps on {node}")


# --- outbox in the task store (no fabric) -----------------------------------------------------
def test_outbox_column_is_added_to_an_old_database_and_reset_by_finish_and_fail(
    tmp_path: Path,
) -> None:
    db = tmp_path / "tasks.db"
    con = sqlite3.connect(db)
    con.executescript(
        """CREATE TABLE tasks (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, status TEXT NOT NULL,
        task_json TEXT NOT NULL, accepted_at REAL NOT NULL, started_at REAL, finished_at REAL,
        attempts INTEGER NOT NULL DEFAULT 0, error_kind TEXT, error TEXT, result_json TEXT,
        timing_json TEXT, bytes_read INTEGER, bytes_returned INTEGER);
        INSERT INTO tasks(id, tenant, status, task_json, accepted_at, finished_at)
        VALUES ('old', 't', 'done', '{}', 1.0, 2.0), ('open', 't', 'accepted', '{}', 1.0, NULL);
        """
    )
    con.commit()
    con.close()
    store = TaskStore(db)
    try:
        assert store.get("old").delivered  # ended before any agent: not published
        assert store.undelivered() == []
        digest = "sha256:" + "ab" * 32
        store.finish(
            "open", result=1, timing={}, bytes_read=0, bytes_returned=0, digest=digest, logs="hi"
        )
        assert [r.id for r in store.undelivered()] == ["open"]
        out = store.get("open").outcome("n1")  # the later columns were added, and are read
        assert (out.status, out.result, out.digest, out.logs, out.node) == (
            "done",
            1,
            digest,
            "hi",
            "n1",
        )
        with pytest.raises(ValueError, match="not finished"):
            TaskRecord(id="x", tenant="t", status="running", task={}, accepted_at=0).outcome("n1")
        store.mark_delivered("open")
        assert store.undelivered() == [] and store.get("open").delivered
        store.fail("open", "X", "again", traceback="tb")  # ended again: not delivered yet
        assert [r.id for r in store.undelivered()] == ["open"]
        out = store.get("open").outcome("n1")
        assert (out.status, out.error_kind, out.traceback, out.logs) == ("failed", "X", "tb", None)
        assert out.digest == digest  # kept from the run
        store.accept("new", "t", "{}")
        store.mark_delivered("new")  # not ended: nothing to deliver, stays in the outbox path
        assert not store.get("new").delivered
    finally:
        store.close()
    TaskStore(db).close()  # migrating twice is a no-op


# --- registry ---------------------------------------------------------------------------------
def test_registers_heartbeats_answers_ping_and_marks_stopping(
    nats_server: EmbeddedNats, prepare_home: Callable[..., Path]
) -> None:
    home = prepare_home("n1")

    async def main() -> None:
        async with fabric(nats_server) as (nc, js, _):
            agent = NodeAgent(
                "edge1",
                home,
                FabricSettings(nats_server.url),
                heartbeat_s=HB,
                labels={"site": "lab"},
                capacity=3,
                ingest=False,
            )
            await agent.start()
            try:
                first = await registry_entry(js, "edge1")
                assert first.name == "edge1" and not first.stopping
                assert first.load.capacity == 3 and first.load.running == 0
                assert first.labels == {"site": "lab"}
                assert first.runtimes == ["python", "core"]
                assert first.cores >= 1 and first.memory_mib > 0 and first.arch
                temp = [
                    d
                    for d in first.data
                    if (d.connector, d.location, d.sensor_type)
                    == ("sqlite", "room1", "temperature")
                ]
                assert len(temp) == 1 and temp[0].rows > 0
                assert temp[0].first_ts is not None and temp[0].last_ts is not None
                assert temp[0].first_ts < temp[0].last_ts

                async def advanced() -> bool:
                    now = await registry_entry(js, "edge1")
                    return now.seq >= first.seq + 3 and now.heartbeat_at > first.heartbeat_at

                await wait_for(advanced, 5, "three more heartbeats")
                pong = NodeInfo.decode(
                    await NatsBus(nc).request(ping_subject("edge1"), b"{}", timeout=2)
                )
                assert pong.name == "edge1" and pong.load.capacity == 3
                background = list(agent._tasks)  # heartbeat, intake, outbox loop
                assert background and not any(t.done() for t in background)
            finally:
                await agent.stop()
            last = await registry_entry(js, "edge1")
            assert last.stopping
            # no heartbeat after stop: nothing that beats is left running (observed, no wait)
            assert all(t.done() for t in background) and agent._tasks == []
            assert (await registry_entry(js, "edge1")).seq == last.seq

    run(main())


# --- tasks ------------------------------------------------------------------------------------
def test_task_runs_with_function_and_runtime_fetched_from_the_repository_and_once_only(
    nats_server: EmbeddedNats,
    prepare_home: Callable[..., Path],
    make_task: Callable[..., dict[str, Any]],
    signing_key: SigningKey,
    runtime_artifact: Artifact,
    tmp_path: Path,
) -> None:
    home = prepare_home("n1", runtime=False)  # neither the function nor the runtime
    fn = build(tmp_path, "count", COUNT, signing_key)
    assert artifact_files(home) == set()

    async def main() -> None:
        async with fabric(nats_server) as (_, js, results):
            repo = await open_repo(js)
            await repo.put(runtime_artifact)
            await repo.put(fn)
            async with running_agent(home, nats_server) as agent:
                task = make_task("count", task_id="t-1", memory_mib=MEM, params={"tag": "x"})
                await publish_task(js, "edge1", task)
                res = await results.wait("t-1")
                assert res.status == "done", res
                assert res.node == "edge1" and res.tenant == "facilities"
                assert res.result["n"] > 0 and res.result["tag"] == "x"
                for key in ("queue", "retrieval", "transfer", "start", "compute", "total"):
                    assert key in res.timing
                assert res.bytes_read > 0 and res.accepted_at and res.finished_at
                assert res.digest == fn.digest and res.attempts == 1  # the Outcome says what ran
                # both came from the repository, verified into the node's store
                assert artifact_files(home) == {hexof(fn), hexof(runtime_artifact)}
                # by name, the task was pinned to the repository's digest
                assert agent.node is not None
                assert agent.node.orchestrator.get("t-1").task["function"]["artifact"] == fn.digest

                # the same task again (a redelivery under another message id): acked, not rerun
                await publish_task(js, "edge1", task, msg_id="t-1-again")
                await wait_for(lambda: agent.counters["duplicates"] == 1, 10, "duplicate ack")
                info = await js.stream_info(TASKS_STREAM)
                assert info.state.messages == 0  # both deliveries acked
                assert agent.node.orchestrator.get("t-1").attempts == 1
                assert agent.counters["accepted"] == 1
                await sweeps(js, "edge1", 2)  # two outbox sweeps after the duplicate
                await results.poll()
                assert results.count("t-1") == 1

    run(main())


def _tampered(art: Artifact) -> Artifact:
    """Same signature, other payload (its digest fixed up in the manifest): a forgery."""
    payload = art.payload.replace(b'"n"', b'"m"')
    assert payload != art.payload
    manifest = {**art.manifest, "payload_sha256": sha256_hex(payload)}
    # an older build than the original, so the name still resolves to the good one
    manifest["created"] = art.manifest["created"] - 1
    if "created_ns" in manifest:
        manifest["created_ns"] = art.manifest["created_ns"] - 1_000_000_000
    return Artifact(manifest, canonical(manifest), art.signature, payload)


def test_tampered_or_untrusted_artifacts_are_refused_and_the_node_keeps_serving(
    nats_server: EmbeddedNats,
    prepare_home: Callable[..., Path],
    make_task: Callable[..., dict[str, Any]],
    signing_key: SigningKey,
    tmp_path: Path,
) -> None:
    home = prepare_home("n1")  # the runtime is installed; functions come from the repository
    good = build(tmp_path, "count", COUNT, signing_key)
    forged = _tampered(good)
    stranger = build(tmp_path, "stranger", COUNT, SigningKey.generate("stranger"))
    altered = build(tmp_path, "altered", COUNT.replace("tag", "tog"), signing_key)

    async def main() -> None:
        async with fabric(nats_server) as (_, js, results):
            repo = await open_repo(js)
            for art in (forged, good, stranger, altered):  # 'count' names the good one
                await repo.put(art)
            # bytes altered at rest inside the object store, after the upload
            raw = bytearray(altered.to_bytes())
            raw[-5] ^= 0xFF
            await repo.objects.put(f"{hexof(altered)}.0", bytes(raw))
            async with running_agent(home, nats_server) as agent:
                await publish_task(js, "edge1", make_task(forged.digest, task_id="forged"))
                await publish_task(js, "edge1", make_task("stranger", task_id="stranger"))
                await publish_task(js, "edge1", make_task("altered", task_id="altered"))
                await publish_task(js, "edge1", make_task("count", task_id="next", memory_mib=MEM))

                res = await results.wait("forged")
                assert res.status == "failed" and res.error_kind == "SignatureError"
                assert "tampered" in (res.error or "")
                res = await results.wait("stranger")
                assert res.status == "failed" and res.error_kind == "SignatureError"
                assert "does not trust" in (res.error or "")
                res = await results.wait("altered")
                assert res.status == "failed" and res.error_kind == "ArtifactFormatError"
                assert "altered" in (res.error or "")
                res = await results.wait("next")
                assert res.status == "done" and res.result["n"] > 0, res

                # nothing refused was stored or recorded as a task; every message was acked
                assert (
                    artifact_files(home) & {hexof(forged), hexof(stranger), hexof(altered)} == set()
                )
                assert agent.node is not None
                assert not agent.node.orchestrator.exists("forged")
                assert agent.counters["refused"] == 3
                assert (await js.stream_info(TASKS_STREAM)).state.messages == 0

    run(main())


def test_invalid_tasks_and_unknown_functions_get_a_failed_result(
    nats_server: EmbeddedNats,
    prepare_home: Callable[..., Path],
    make_task: Callable[..., dict[str, Any]],
) -> None:
    home = prepare_home(
        "n1",
        policy={"tenants": {"facilities": {"locations": ["room2"], "sensor_types": "*"}}},
        functions={"count": COUNT},
    )

    room2 = [{"name": "h", "select": {"location": "room2", "sensor_type": "humidity"}}]

    async def main() -> None:
        async with fabric(nats_server) as (_, js, results), running_agent(home, nats_server):
            bad = make_task("count", task_id="bad", memory_mib=0)
            await publish_task(js, "edge1", bad)
            await publish_task(js, "edge1", make_task("nowhere", task_id="unknown", data=room2))
            await publish_task(js, "edge1", make_task("count", task_id="denied", memory_mib=MEM))
            res = await results.wait("bad")
            assert res.error_kind == "TaskValidationError" and "memory_mib" in (res.error or "")
            res = await results.wait("unknown")
            assert res.error_kind == "ArtifactError" and "nowhere" in (res.error or "")
            res = await results.wait("denied")
            assert res.error_kind == "AccessDenied" and res.tenant == "facilities"

    run(main())


# --- remote retrieval -------------------------------------------------------------------------
def test_query_returns_the_blob_a_local_task_gets_and_the_policy_still_applies(
    nats_server: EmbeddedNats, prepare_home: Callable[..., Path]
) -> None:
    policy = {
        "tenants": {
            "facilities": {"locations": "*", "sensor_types": "*"},
            "guest": {"locations": ["room2"], "sensor_types": ["humidity"]},
        }
    }
    home = prepare_home("n1", policy=policy)
    ops = [
        DataOp.model_validate(
            {"name": "t", "select": {"location": "room1", "sensor_type": "temperature"}}
        ),
        DataOp.model_validate({"name": "everything"}),  # big enough for several chunks
    ]
    params = {"k": 3}

    async def main() -> None:
        async with fabric(nats_server) as (nc, _, _), running_agent(home, nats_server) as agent:
            bus = NatsBus(nc)
            req = QueryRequest(tenant="facilities", data=ops, params=params)
            blob, meta = decode_query_reply(
                await bus.request(query_subject("edge1"), req.encode(), timeout=10)
            )
            assert agent.node is not None
            datasets, _ = agent.node.broker.fetch("facilities", ops)  # what a task would get
            local = encode(datasets, params)
            assert blob == bytes(local) and len(blob) > 64 * 1024  # several chunks
            assert meta.blob_bytes == len(blob)
            assert meta.rows == sum(len(d) for d in datasets.values()) > 0
            assert meta.bytes_read == sum(d.nbytes for d in datasets.values())

            denied = QueryRequest(tenant="guest", data=ops, params=params)
            with pytest.raises(AccessDenied, match="guest"):
                await bus.request(query_subject("edge1"), denied.encode(), timeout=10)

    run(main())


# --- crash and restart --------------------------------------------------------------------------
FADES = str(Path(sys.executable).parent / "fades")


def start_node_process(home: Path, url: str, name: str = "edge1") -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            FADES,
            "node",
            "start",
            "--name",
            name,
            "--nats",
            url,
            "--data",
            str(home),
            "--heartbeat",
            str(HB),
            "--no-ingest",
            "--capacity",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until ready (or the process dies)
    if line.strip() != f"node {name} ready":
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"node did not start: {line!r} {err}")
    return proc


def task_row(home: Path, task_id: str) -> tuple[str, int] | None:
    con = sqlite3.connect(home / "tasks.db", timeout=5)
    try:
        return con.execute("SELECT status, attempts FROM tasks WHERE id=?", (task_id,)).fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        con.close()


def test_a_node_process_killed_holding_a_task_delivers_its_result_once_after_restart(
    nats_server: EmbeddedNats,
    prepare_home: Callable[..., Path],
    make_task: Callable[..., dict[str, Any]],
) -> None:
    home = prepare_home("n1", functions={"slow": SLOW})

    async def main() -> None:
        async with fabric(nats_server) as (_, js, results):
            proc = start_node_process(home, nats_server.url)
            try:
                task = make_task("slow", task_id="held", memory_mib=MEM, params={"seconds": 1.5})
                await publish_task(js, "edge1", task)
                await wait_for(lambda: task_row(home, "held") == ("running", 1), 20, "run")
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            assert (await js.stream_info(TASKS_STREAM)).state.messages == 0  # it was acked
            await results.poll()
            assert results.count("held") == 0

            proc = start_node_process(home, nats_server.url)
            try:
                res = await results.wait("held", timeout=30)
                assert res.status == "done" and res.result["slept"] == 1.5
                assert task_row(home, "held") == ("done", 2)  # rerun after the crash
                await sweeps(js, "edge1", 3)  # heartbeats sweep the outbox: nothing left to send
                await results.poll()
                assert results.count("held") == 1
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=20) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            assert (await registry_entry(js, "edge1")).stopping

    run(main())


def test_agent_survives_a_nats_restart_and_delivers_results_held_meanwhile(
    caplog: pytest.LogCaptureFixture,
    nats_server: EmbeddedNats,
    prepare_home: Callable[..., Path],
    make_task: Callable[..., dict[str, Any]],
) -> None:
    home = prepare_home("n1", functions={"count": COUNT})

    async def main() -> None:
        async with running_agent(home, nats_server) as agent:
            async with fabric(nats_server) as (_, js, results):
                before = (await registry_entry(js, "edge1")).seq
            nats_server.stop()
            # while the fabric is down: a local task finishes; its result waits in the outbox
            assert agent.node is not None
            await asyncio.to_thread(
                agent.node.orchestrator.submit,
                make_task("count", task_id="offline", memory_mib=MEM),
            )
            rec = await asyncio.to_thread(agent.node.orchestrator.wait, "offline", 30)
            assert rec.status == "done" and not rec.delivered

            def failed_beats() -> bool:  # the agent noticed the fabric is gone
                return any("heartbeat failed" in r.getMessage() for r in caplog.records)

            await wait_for(failed_beats, 30, "a failed heartbeat while the server is down")
            nats_server.start()
            async with fabric(nats_server) as (_, js, results):

                async def beating() -> bool:
                    try:
                        return (await registry_entry(js, "edge1")).seq > before + 2
                    except Exception:
                        return False

                await wait_for(beating, 15, "heartbeats after the restart")
                res = await results.wait("offline", timeout=15)
                assert res.status == "done"
                await publish_task(js, "edge1", make_task("count", task_id="after", memory_mib=MEM))
                res = await results.wait("after", timeout=20)
                assert res.status == "done" and res.result["n"] > 0

    run(main())


# --- command line -------------------------------------------------------------------------------
def test_cli_refuses_a_bad_name_and_an_unreachable_nats_in_one_line(tmp_path: Path) -> None:
    from fades.fabric.server import free_port

    bad = subprocess.run(
        [FADES, "node", "start", "--name", "a.b", "--data", str(tmp_path / "h")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "node name 'a.b' is not valid" in bad.stderr and "Traceback" not in bad.stderr
    down = subprocess.run(
        [
            FADES,
            "node",
            "start",
            "--name",
            "edge1",
            "--data",
            str(tmp_path / "h"),
            "--nats",
            f"nats://127.0.0.1:{free_port()}",
            "--connect-timeout",
            "0.3",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 2
    assert "cannot reach NATS" in down.stderr and "Traceback" not in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1
    zero = subprocess.run(
        [FADES, "node", "start", "--name", "edge1", "--data", str(tmp_path / "h"),
         "--capacity", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert zero.returncode == 2 and "Traceback" not in zero.stderr
    assert zero.stderr.strip() == "error: capacity must be at least 1, got 0"


def test_unreachable_nats_fails_start_and_leaves_nothing_open(tmp_path: Path) -> None:
    from fades.fabric.server import free_port

    agent = NodeAgent(
        "edge1",
        tmp_path / "h",
        FabricSettings(f"nats://127.0.0.1:{free_port()}"),
        connect_timeout=0.2,
        ingest=False,
    )
    with pytest.raises(FabricError, match="cannot reach NATS"):
        run(agent.start())
    assert agent.node is None
    with pytest.raises(FabricError, match="not valid"):
        NodeAgent("a b", tmp_path / "h", FabricSettings())


# --- ingest -------------------------------------------------------------------------------------
def test_ingested_readings_show_up_in_the_registry(
    nats_server: EmbeddedNats, prepare_home: Callable[..., Path]
) -> None:
    pytest.importorskip("fades.sensors.ingest")
    home = prepare_home("n1")

    async def main() -> None:
        async with (
            fabric(nats_server) as (nc, js, _),
            running_agent(home, nats_server, ingest=True) as agent,
        ):
            assert agent.ingest.ingestor is not None
            reading = {"ts": time.time(), "value": 21.5, "device": "room9-temperature", "unit": "C"}
            await nc.publish("sensors.edge1.room9.temperature", json.dumps(reading).encode())
            await nc.flush()

            async def seen() -> bool:
                info = await registry_entry(js, "edge1")
                held = [d for d in info.data if d.location == "room9"]
                return bool(held) and held[0].rows == 1 and info.stats.get("written") == 1

            await wait_for(seen, 10, "room9 in the registry")

    run(main())


# --- outbox -------------------------------------------------------------------------------------
def test_undelivered_results_are_published_on_start_and_by_the_heartbeat_sweep(
    nats_server: EmbeddedNats,
    prepare_home: Callable[..., Path],
    open_node: Callable[..., Any],
    make_task: Callable[..., dict[str, Any]],
) -> None:
    home = prepare_home("n1", functions={"count": COUNT})
    offline = open_node(home)  # a result made while no agent ran: only the outbox has it
    assert offline.orchestrator.run(make_task("count", task_id="before", memory_mib=MEM), 30).done
    offline.close()

    async def main() -> None:
        async with fabric(nats_server) as (_, js, results), running_agent(home, nats_server) as a:
            res = await results.wait("before", timeout=10)
            assert res.status == "done" and res.result["n"] > 0
            assert a.node is not None and a.node.orchestrator.get("before").delivered

            # the first publish of the next result fails: the heartbeat sweep sends it again
            assert a.bus is not None
            real = a.bus.publish
            attempts: list[str] = []

            async def flaky(subject: str, payload: bytes = b"", **kw: Any) -> Any:
                if subject.startswith("fades.result."):
                    attempts.append(subject)
                    if len(attempts) == 1:
                        raise FabricError("lost")
                return await real(subject, payload, **kw)

            a.bus.publish = flaky  # type: ignore[method-assign]
            await publish_task(js, "edge1", make_task("count", task_id="flaky", memory_mib=MEM))
            res = await results.wait("flaky", timeout=20)
            assert res.status == "done" and len(attempts) >= 2
            await wait_for(lambda: a.node.orchestrator.get("flaky").delivered, 5, "delivered")

    run(main())
