"""Moving stateful tasks between real processes: a nats-server, ``fades controller start`` and
``fades node start`` subprocesses, real wasmtime, real SQLite, real kills.

Every invocation a node runs is in its ``tasks.db``; the counter function returns how many
times it ran in total, so a result equal to ``seq + 1`` at every ``seq`` shows that its state
travelled, and the union of the nodes' sequence numbers shows what ran twice or never.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fades.client import FadesClient
from fades.errors import BadRequest, MigrationFailed, TaskNotFound, UnknownNode
from fades.fabric.server import free_port
from fades.functions.artifact import Artifact
from fades.functions.build import build_python
from fades.functions.keys import SigningKey, public_pem

COUNTER = """
COUNT = 0

def main(data, params):
    global COUNT
    COUNT += 1
    return {"count": COUNT}
"""

START_S = 180.0  # generous: a busy 2-core machine


def _fades(*args: str) -> list[str]:
    return [sys.executable, "-m", "fades", *args]


#: every node verifies every other's checkpoints (no fabric token here to derive it from)
STATE_KEY = "test-state-key-shared-by-all-nodes-0123456789"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FADES_NATS")}
    return env | {"FADES_STATE_KEY": STATE_KEY}


def wait_for(what: str, check: Callable[[], Any], timeout: float = START_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Cluster:
    """nats-server + controller + node agents, each its own process."""

    def __init__(self, root: Path, nats_url: str, key: SigningKey) -> None:
        self.root, self.nats_url, self.key = root, nats_url, key
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.homes: dict[str, Path] = {}
        self.url = ""
        self.token = ""

    def _log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def log_text(self, name: str) -> str:
        return self._log(name).read_text(errors="replace")

    def _start(self, name: str, cmd: list[str], ready: str) -> None:
        log = self._log(name).open("a")
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, text=True, env=_env())
        self.procs[name] = proc

        def up() -> bool:
            assert proc.poll() is None, f"{name} exited: {self.log_text(name)[-2000:]}"
            return ready in self.log_text(name)

        wait_for(f"{name} to be ready", up)

    def start_controller(self, down_after: float = 15.0) -> None:
        home = self.root / "controller"
        (home / "trusted").mkdir(parents=True, exist_ok=True)
        (home / "trusted" / f"{self.key.id}.pub").write_bytes(public_pem(self.key.public))
        self.visitor = "visitor-token-0123456789"
        tokens_file = home / "tokens.yaml"
        tokens_file.write_text(
            yaml.safe_dump({"tokens": {"facilities-token-0123456789": "facilities",
                                       self.visitor: "visitor"}})
        )  # fmt: skip
        tokens_file.chmod(0o600)
        port = free_port()
        self._start(
            "controller",
            _fades(
                "controller", "start", "--nats", self.nats_url, "--home", str(home),
                "--http", f"127.0.0.1:{port}", "--down-after", str(down_after),
            ),
            "controller ready ",
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{port}"
        tokens = yaml.safe_load((home / "tokens.yaml").read_text())["tokens"]
        (self.token,) = [t for t, tenant in tokens.items() if tenant == "facilities"]

    def start_node(self, name: str, home: Path, capacity: int = 2) -> None:
        self.homes[name] = home
        self._log(name).write_text("")  # a restart reads only its own lines
        self._start(
            name,
            _fades(
                "node", "start", "--name", name, "--nats", self.nats_url, "--data", str(home),
                "--heartbeat", "0.2", "--capacity", str(capacity), "--no-ingest", "-v",
            ),
            f"node {name} ready",
        )  # fmt: skip

    def client(self) -> FadesClient:
        return FadesClient(self.url, self.token, timeout=60.0)

    def invocations(self, node: str, task_id: str) -> list[tuple[int, int]]:
        """``(seq, count)`` of the node's successful invocations of ``task_id``."""
        db = sqlite3.connect(f"file:{self.homes[node] / 'tasks.db'}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT seq, result_json FROM invocations WHERE task_id = ? AND ok = 1 "
                "ORDER BY seq",
                (task_id,),
            ).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            db.close()
        return [(int(s), int(json.loads(r)["count"])) for s, r in rows]

    def status(self, node: str, task_id: str) -> str | None:
        row = self._task_row(node, task_id)
        return None if row is None else str(row[0])

    def why(self, node: str, task_id: str) -> str:
        row = self._task_row(node, task_id)
        return "" if row is None else str(row[1] or "")

    def _task_row(self, node: str, task_id: str) -> Any:
        db = sqlite3.connect(f"file:{self.homes[node] / 'tasks.db'}?mode=ro", uri=True)
        try:
            return db.execute("SELECT status, error FROM tasks WHERE id = ?", (task_id,)).fetchone()
        finally:
            db.close()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        self.procs[name].send_signal(sig)
        if sig == signal.SIGKILL:
            self.procs[name].wait(30)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def cluster(nats_server: Any, tmp_path: Path, signing_key: SigningKey) -> Iterator[Cluster]:
    c = Cluster(tmp_path, nats_server.url, signing_key)
    try:
        yield c
    finally:
        c.close()


def _counter_task(make_task: Any, every: Any = "every", period_s: float = 0.02) -> dict[str, Any]:
    return make_task(
        "counter",
        memory_mib=64,
        mode="persistent",
        period_s=period_s,
        state={"checkpoint": every},
    )


def _setup(
    cluster: Cluster,
    prepare_home: Any,
    runtime_artifact: Artifact,
    signing_key: SigningKey,
    tmp_path: Path,
    nodes: tuple[str, ...] = ("a", "b"),
    down_after: float = 15.0,
) -> None:
    # a generous down_after: a node slowed by a loaded machine must not look dead
    cluster.start_controller(down_after)
    for n in nodes:
        cluster.start_node(n, prepare_home(n, runtime=False))
    src = tmp_path / "src" / "counter.py"
    src.parent.mkdir(exist_ok=True)
    src.write_text(COUNTER)
    with cluster.client() as c:
        c.upload(runtime_artifact.to_bytes())
        c.upload(build_python(src, key=signing_key).to_bytes())
        wait_for("nodes up", lambda: set(nodes) <= {n["name"] for n in c.nodes() if n["up"]})


def _running_on(cluster: Cluster, node: str, task_id: str, at_least: int) -> list[Any]:
    return wait_for(
        f"{at_least} invocations of {task_id} on {node}",
        lambda: (inv := cluster.invocations(node, task_id)) and inv[-1][0] >= at_least and inv,
    )


def _continuous(cluster: Cluster, task_id: str, nodes: tuple[str, ...]) -> list[int]:
    """Every successful invocation across ``nodes``: seqs 0..n once each, counts seq + 1."""
    seen: list[tuple[int, int]] = []
    for n in nodes:
        seen += cluster.invocations(n, task_id)
    seqs = sorted(s for s, _ in seen)
    assert seqs == list(range(len(seqs))), f"a sequence number ran twice or never: {seqs}"
    assert all(count == s + 1 for s, count in seen), f"state lost or repeated: {sorted(seen)}"
    return seqs


def test_a_migration_under_load_loses_and_repeats_nothing(
    cluster: Cluster,
    prepare_home: Any,
    make_task: Any,
    runtime_artifact: Artifact,
    signing_key: SigningKey,
    tmp_path: Path,
) -> None:
    _setup(cluster, prepare_home, runtime_artifact, signing_key, tmp_path)
    with cluster.client() as c:
        tid = c.submit(_counter_task(make_task), node="a")["task_id"]
        _running_on(cluster, "a", tid, 5)
        # over the CLI, while the task runs every 20 ms
        cli = subprocess.run(
            _fades(
                "task", "migrate", tid, "--to", "b", "--controller", cluster.url,
                "--token", cluster.token, "--json",
            ),
            capture_output=True, text=True, timeout=300, env=_env(),
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        receipt = json.loads(cli.stdout)
        assert (receipt["source"], receipt["target"], receipt["forced"]) == ("a", "b", False)
        assert receipt["downtime_s"] is not None and receipt["downtime_s"] < receipt["total_s"]
        assert 0 < receipt["state_bytes"] <= 1024
        assert cluster.status("a", tid) == "moved"
        assert c.get(tid)["node"] == "b"
        # another tenant cannot see it, let alone move it
        with FadesClient(cluster.url, cluster.visitor) as other, pytest.raises(TaskNotFound):
            other.migrate(tid, "a")
        # and back and forth over HTTP
        for to in ("a", "b", "a"):
            seq = cluster.invocations("b" if to == "a" else "a", tid)[-1][0]
            r = c.migrate(tid, to)
            assert r["target"] == to and r["seq"] >= seq + 1
        _running_on(cluster, "a", tid, receipt["seq"] + 20)
        assert c.get(tid)["status"] == "dispatched"
        # bad requests get one-line errors; the controller keeps serving
        with pytest.raises(BadRequest, match="already runs on node 'a'"):
            c.migrate(tid, "a")
        with pytest.raises(UnknownNode, match="no node named 'nowhere'"):
            c.migrate(tid, "nowhere")
        c.cancel(tid)
        wait_for("the cancel", lambda: c.get(tid)["status"] == "failed")
        with pytest.raises(MigrationFailed, match="already ended"):
            c.migrate(tid, "b")
    seqs = _continuous(cluster, tid, ("a", "b"))
    assert len(seqs) > 20


def test_kill_9_of_the_source_mid_migration_leaves_exactly_one_live_instance(
    cluster: Cluster,
    prepare_home: Any,
    make_task: Any,
    runtime_artifact: Artifact,
    signing_key: SigningKey,
    tmp_path: Path,
) -> None:
    _setup(cluster, prepare_home, runtime_artifact, signing_key, tmp_path)
    with cluster.client() as c:
        tid = c.submit(_counter_task(make_task), node="a")["task_id"]
        _running_on(cluster, "a", tid, 5)
        result: dict[str, Any] = {}

        def move() -> None:
            try:
                result["receipt"] = c.migrate(tid, "b")
            except Exception as exc:
                result["error"] = exc

        mover = threading.Thread(target=move)
        mover.start()
        # the target has its warm session: the source is about to be asked to stop
        wait_for(
            "the target to prepare", lambda: "prepared a warm session" in cluster.log_text("b")
        )
        cluster.kill("a")
        mover.join(120)
        assert not mover.is_alive()
        assert "error" not in result, result
        assert result["receipt"]["target"] == "b"
        last_a = cluster.invocations("a", tid)[-1][0]
        _running_on(cluster, "b", tid, last_a + 10)
        assert c.get(tid)["node"] == "b"

        # the old node comes back: it must not take the task again
        cluster.start_node("a", cluster.homes["a"])
        wait_for("a up again", lambda: any(n["name"] == "a" and n["up"] for n in c.nodes()))
        b_now = cluster.invocations("b", tid)[-1][0]
        _running_on(cluster, "b", tid, b_now + 10)
        assert cluster.invocations("a", tid)[-1][0] == last_a, "the old node ran it again"
        assert cluster.status("a", tid) == "moved"
        assert c.get(tid)["status"] == "dispatched"
    # a forced move may re-run what came after the newest checkpoint, never skip
    seen = cluster.invocations("a", tid) + cluster.invocations("b", tid)
    assert all(count == s + 1 for s, count in seen)
    assert sorted({s for s, _ in seen}) == list(range(max(s for s, _ in seen) + 1))


def test_a_stale_node_is_fenced_out_after_failover(
    cluster: Cluster,
    prepare_home: Any,
    make_task: Any,
    runtime_artifact: Artifact,
    signing_key: SigningKey,
    tmp_path: Path,
) -> None:
    _setup(cluster, prepare_home, runtime_artifact, signing_key, tmp_path, down_after=3.0)
    with cluster.client() as c:
        tid = c.submit(_counter_task(make_task), node="a")["task_id"]
        _running_on(cluster, "a", tid, 5)
        cluster.kill("a", signal.SIGSTOP)  # cut off: no heartbeat, but not dead
        stopped_at = cluster.invocations("a", tid)[-1][0]
        # the registry marks it down; failover restarts the task on b from its checkpoint
        wait_for("failover to b", lambda: c.get(tid)["node"] == "b")
        _running_on(cluster, "b", tid, stopped_at + 10)
        cluster.kill("a", signal.SIGCONT)  # split brain: the old instance wakes up
        # its checkpoint write is refused: the fencing token moved on with b's claim
        wait_for("a to stop the task", lambda: cluster.status("a", tid) == "failed")
        assert "another instance holds it (node b)" in cluster.why("a", tid)
        b_now = cluster.invocations("b", tid)[-1][0]
        _running_on(cluster, "b", tid, b_now + 10)
        a_after = cluster.invocations("a", tid)
        # the stale instance ran at most the one invocation whose checkpoint was refused
        assert a_after[-1][0] <= stopped_at + 1
        assert c.get(tid)["status"] == "dispatched" and c.get(tid)["node"] == "b"
        # the checkpoint the task moves with is b's, not the stale one: move it back live
        r = c.migrate(tid, "a")
        _running_on(cluster, "a", tid, r["seq"] + 5)
    back = [(s, n) for s, n in cluster.invocations("a", tid) if s >= r["seq"]]
    assert back[0][0] == r["seq"] and all(n == s + 1 for s, n in back)
    seen_b = cluster.invocations("b", tid)
    assert all(count == s + 1 for s, count in seen_b), "b did not continue from a checkpoint"
    assert seen_b[0][0] <= stopped_at + 1, "failover skipped invocations"


def test_draining_a_node_moves_its_stateful_tasks_and_places_nothing_new_on_it(
    cluster: Cluster,
    prepare_home: Any,
    make_task: Any,
    runtime_artifact: Artifact,
    signing_key: SigningKey,
    tmp_path: Path,
) -> None:
    _setup(cluster, prepare_home, runtime_artifact, signing_key, tmp_path)
    with cluster.client() as c:
        tids = [c.submit(_counter_task(make_task), node="a")["task_id"] for _ in range(2)]
        for tid in tids:
            _running_on(cluster, "a", tid, 3)
        cli = subprocess.run(
            _fades(
                "nodes", "drain", "a", "--controller", cluster.url, "--token", cluster.token,
                "--json",
            ),
            capture_output=True, text=True, timeout=300, env=_env(),
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        status = json.loads(cli.stdout)
        assert (status["state"], status["total"], status["moved"]) == ("finished", 2, 2)
        assert {t["target"] for t in status["tasks"]} == {"b"}
        for tid in tids:
            assert cluster.status("a", tid) == "moved" and c.get(tid)["node"] == "b"
            _running_on(cluster, "b", tid, cluster.invocations("a", tid)[-1][0] + 3)
        # placed work avoids the drained node, even where its data is
        placed = c.submit(make_task("counter", memory_mib=64))
        assert placed["node"] == "b"
        assert c.drain_status("a")["state"] == "finished"
        assert {n["name"]: n["draining"] for n in c.nodes()} == {"a": True, "b": False}
        with pytest.raises(UnknownNode, match="no node named 'zz'"):
            c.drain("zz")
        c.undrain("a")
        assert not any(n["draining"] for n in c.nodes())
        for tid in tids:
            c.cancel(tid)
    for tid in tids:
        _continuous(cluster, tid, ("a", "b"))
