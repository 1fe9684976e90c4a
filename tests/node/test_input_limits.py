"""A node under hostile task input: limits refuse before the cost is paid, failures are clear
one-line errors, and the node (and the next CLI run on its folder) keeps serving.

Real node folders (SQLite, wasmtime) in tmp_path; the CLI runs as a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from fades.errors import InputTooLarge

COUNT = """
def main(data, params):
    return {name: len(ds) for name, ds in data.items()}
"""

MEM = 32
SRC = str(Path(__file__).resolve().parents[2] / "src")


def task(data: list[dict[str, Any]] | None = None, **function: Any) -> dict[str, Any]:
    return {
        "credentials": {"tenant": "facilities"},
        "data": data or [{"name": "t", "select": {"location": "room1", "last": 5}}],
        "function": {"artifact": "count", "memory_mib": MEM, **function},
    }


@pytest.fixture
def node_home(prepare_home: Callable[..., Path]) -> Callable[..., Path]:
    def make(limits: dict[str, Any] | None = None) -> Path:
        home = prepare_home(functions={"count": COUNT})
        if limits is not None:
            (home / "limits.yaml").write_text(yaml.safe_dump(limits))
        return home

    return make


def test_too_many_rows_fail_the_task_before_fetching_and_the_node_keeps_serving(
    node_home: Callable[..., Path], open_node: Callable[..., Any]
) -> None:
    node = open_node(node_home({"max_rows": 100}))
    orc = node.orchestrator
    big = orc.run(task([{"name": "t", "select": {"location": "room1"}}]), timeout=60)
    assert big.status == "failed" and big.error_kind == "InputTooLarge"
    assert "max_rows" in (big.error or "") and "100" in (big.error or "")
    good = orc.run(task(), timeout=60)
    assert good.status == "done" and good.result == {"t": 5}


def test_too_many_data_operations_are_refused_at_submit(
    node_home: Callable[..., Path], open_node: Callable[..., Any]
) -> None:
    node = open_node(node_home({"max_data_ops": 4}))
    ops = [{"name": f"d{i}", "select": {"location": "room1", "last": 1}} for i in range(5)]
    with pytest.raises(InputTooLarge, match="max_data_ops"):
        node.orchestrator.submit(task(ops))
    assert node.orchestrator.store.list() == []
    assert node.orchestrator.run(task(ops[:4]), timeout=60).status == "done"


def test_a_retrieval_over_its_time_limit_fails_and_the_folder_serves_the_next_node(
    node_home: Callable[..., Path], open_node: Callable[..., Any]
) -> None:
    home = node_home({"retrieval_seconds": 0.001})
    node = open_node(home)
    everything = task([{"name": f"d{i}", "select": {}} for i in range(8)])
    rec = node.orchestrator.run(everything, timeout=60)
    assert rec.status == "failed" and rec.error_kind == "RetrievalTimeLimitExceeded"
    assert "retrieval_seconds=0.001" in (rec.error or "")
    t0 = time.monotonic()
    node.close()
    assert time.monotonic() - t0 < 10  # nothing left running in the broker
    (home / "limits.yaml").unlink()
    second = open_node(home)
    assert second.orchestrator.run(task(), timeout=60).status == "done"


# --- the CLI ----------------------------------------------------------------------------------
def cli(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=SRC, COLUMNS="200", FADES_HOME=str(home))
    env.pop("FORCE_COLOR", None)
    return subprocess.run(
        [sys.executable, "-m", "fades", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def laughs() -> str:
    out = ["l0: &l0 [" + ",".join(["lol"] * 10) + "]"]
    out += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 9)]
    return "\n".join(out) + "\n"


HOSTILE: dict[str, str | bytes] = {
    "deep.json": "[" * 5000 + "]" * 5000,
    "binary.yaml": bytes(range(256)) * 4,
    "laughs.yaml": laughs(),
    "window.json": json.dumps(
        task([{"name": "t", "select": {"location": "room1", "last_seconds": 1e12}}])
    ),
}


def test_hostile_task_files_are_one_line_errors_with_exit_2(
    node_home: Callable[..., Path], tmp_path: Path
) -> None:
    home = node_home()
    for name, content in HOSTILE.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        t0 = time.monotonic()
        proc = cli(home, "task", "run", str(path))
        assert proc.returncode == 2, (name, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr, (name, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "error (TaskValidationError)" in lines[0], (name, lines)
        assert time.monotonic() - t0 < 60
    good = tmp_path / "good.json"
    good.write_text(json.dumps(task()))
    proc = cli(home, "task", "run", str(good), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["result"] == {"t": 5}


def test_a_refused_bomb_leaves_the_folder_usable_for_the_next_cli_run(
    node_home: Callable[..., Path], tmp_path: Path
) -> None:
    home = node_home({"retrieval_seconds": 0.001})
    bomb = tmp_path / "ops.json"
    bomb.write_text(json.dumps(task([{"name": f"d{i}", "select": {}} for i in range(200)])))
    proc = cli(home, "task", "run", str(bomb))
    assert proc.returncode == 2 and "max_data_ops" in proc.stderr, proc.stderr
    slow = tmp_path / "slow.json"
    slow.write_text(json.dumps(task([{"name": f"d{i}", "select": {}} for i in range(8)])))
    proc = cli(home, "task", "run", str(slow), "--json")
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["error_kind"] == "RetrievalTimeLimitExceeded"
    (home / "limits.yaml").unlink()
    good = tmp_path / "good.json"
    good.write_text(json.dumps(task()))
    t0 = time.monotonic()
    proc = cli(home, "task", "run", str(good), "--json")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 60


def test_a_bomb_left_running_by_a_crash_is_refused_on_restart_and_does_not_hold_the_node(
    node_home: Callable[..., Path], open_node: Callable[..., Any]
) -> None:
    """The 'next CLI run hung' symptom: a run interrupted mid-retrieval leaves its task
    'running'; the next process resumes it. It must fail fast, not fetch for minutes."""
    from fades.node.taskstore import TaskStore
    from fades.task import parse_task

    home = node_home()
    bomb = parse_task(task([{"name": f"d{i}", "select": {}} for i in range(200)]))
    store = TaskStore(home / "tasks.db")
    store.accept(bomb.id, bomb.tenant, bomb.to_json())
    store.start(bomb.id)  # the process died here
    store.close()
    t0 = time.monotonic()
    node = open_node(home)
    rec = node.orchestrator.wait(bomb.id, timeout=60)
    assert rec.status == "failed" and rec.error_kind == "InputTooLarge", rec
    assert node.orchestrator.run(task(), timeout=60).status == "done"
    node.close()
    assert time.monotonic() - t0 < 60
