"""Messages a fresh-clone trial found wrong, met where the user meets them (``fades`` as a
subprocess): each says what is really the matter and what to do, and the next good command
works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def fades(
    *args: str, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fades", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
        env=dict(os.environ) | (env or {}),
        check=False,
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from fades.cluster import LocalCluster

    c = LocalCluster(tmp_path_factory.mktemp("up") / "up", nodes=1, days=0.05, sensors=False)
    c.prepare()
    c.start()
    try:
        yield c
    finally:
        c.stop()


def _env(cluster: Any) -> dict[str, str]:
    return {"FADES_CONTROLLER": cluster.url, "FADES_TOKEN": cluster.token}


def test_submit_to_a_draining_holder_names_it_and_says_how_to_undrain(cluster: Any) -> None:
    env = _env(cluster)
    node = cluster.names[0]
    drained = fades("nodes", "drain", node, env=env)
    assert drained.returncode == 0, drained
    try:
        refused = fades("task", "submit", "examples/tasks/mean_core.yaml", env=env)
        assert refused.returncode == 2, refused
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1, refused.stderr
        assert lines[0].startswith("error (NoPlacement):"), lines
        assert "no node holds it" not in lines[0]
        assert f"node(s) {node} could run its data" in lines[0], lines
        assert "being drained" in lines[0]
        assert f"'fades nodes undrain {node}'" in lines[0]
    finally:
        undrained = fades("nodes", "undrain", node, env=env)
    assert undrained.returncode == 0, undrained
    again = fades("task", "submit", "examples/tasks/mean_core.yaml", env=env)
    assert again.returncode == 0, again
    # undraining a node that does not exist is a mistake, not a success
    typo = fades("nodes", "undrain", "edge9", env=env)
    assert typo.returncode == 2, typo
    assert typo.stderr.startswith("error (UnknownNode): no node named 'edge9'"), typo.stderr
    assert "takes work again" not in typo.stdout


def test_upload_signed_by_a_stranger_says_the_controller_and_how_to_trust(
    cluster: Any, tmp_path: Path
) -> None:
    env = _env(cluster)
    other = tmp_path / "other"
    made = fades("keys", "generate", "--home", str(other), cwd=tmp_path)
    assert made.returncode == 0, made
    (tmp_path / "f.py").write_text("def main(data, params):\n    return 1\n")
    built = fades(
        "fn", "build", "f.py", "--home", str(other), "--no-install", "--out", "f.fart",
        cwd=tmp_path,
    )  # fmt: skip
    assert built.returncode == 0, built
    refused = fades("fn", "upload", "f.fart", cwd=tmp_path, env=env)
    assert refused.returncode == 2, refused
    line = refused.stderr.strip()
    assert line.startswith("error (SignatureError): upload refused:"), line
    assert "which the controller does not trust" in line, line
    assert "this node" not in line, line
    assert f"fades keys trust KEY.pub --home {cluster.controller_home}" in " ".join(line.split())
    listed = fades("fn", "list", "--home", str(other), cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed


def test_a_function_that_raises_reports_the_bytes_it_read(tmp_path: Path) -> None:
    (tmp_path / "raises.py").write_text(
        'def main(data, params):\n    x = data["readings"]\n    return 1 / 0\n'
    )
    (tmp_path / "ok.py").write_text('def main(data, params):\n    return len(data["readings"])\n')
    failed = fades("fn", "test", "raises.py", "--json", cwd=tmp_path)
    assert failed.returncode == 1, failed
    bad = json.loads(failed.stdout)
    assert bad["status"] == "failed" and bad["error_kind"] == "FunctionCrashed", bad
    good = fades("fn", "test", "ok.py", "--json", cwd=tmp_path)
    assert good.returncode == 0, good
    read = json.loads(good.stdout)["bytes_read"]
    assert read > 0
    assert bad["bytes_read"] == read  # the same sample: the same input, raised or not
    shown = fades("fn", "test", "raises.py", cwd=tmp_path)
    assert f"bytes read at the edge: {read:,}" in shown.stdout, shown.stdout


def test_oversized_inputs_without_data_report_only_the_size(tmp_path: Path) -> None:
    task = {
        "credentials": {"tenant": "facilities"},
        "function": {"artifact": "mean_core"},
        "inputs": {"big": "x" * (600 * 1024)},
    }
    (tmp_path / "big.json").write_text(json.dumps(task))
    proc = fades("task", "run", "big.json", "--home", str(tmp_path / "h"), cwd=tmp_path)
    assert proc.returncode == 2, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "inputs are 614,410 bytes of JSON; at most 524,288" in lines[0], lines
    assert "at least one data operation" not in proc.stderr


def test_several_task_problems_are_printed_once_each(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "credentials: {tenant: facilities}\n"
        "data:\n  - {name: t, select: {location: room1}}\n"
        "function: {artifact: x, memory_mib: 0, time_budget_ms: -1}\n"
    )
    proc = fades("task", "run", "bad.yaml", "--home", str(tmp_path / "h"), cwd=tmp_path)
    assert proc.returncode == 2, proc
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == "error (TaskValidationError): invalid task file bad.yaml (2 problems):"
    assert lines[1:] == [
        "  - function.memory_mib: Input should be greater than or equal to 1",
        "  - function.time_budget_ms: Input should be greater than or equal to 1",
    ], lines
    assert proc.stderr.count("memory_mib") == 1


def test_task_get_of_a_running_task_shows_no_bytes_line(cluster: Any, tmp_path: Path) -> None:
    env = _env(cluster)
    (tmp_path / "counter.py").write_text(
        "count = 0\n\ndef main(data, params):\n    global count\n    count += 1\n    return count\n"
    )
    (tmp_path / "counter.yaml").write_text(
        "credentials: {tenant: facilities}\n"
        "data:\n  - {name: t, select: {location: room1, sensor_type: temperature,"
        " last_seconds: 60}, allow_empty: true}\n"
        "function: {artifact: counter, mode: persistent, period_s: 1}\n"
    )
    key = str(cluster.home / "keys" / "cluster.key")
    built = fades(
        "fn", "build", "counter.py", "--key", key, "--no-install", "--out", "counter.fart",
        cwd=tmp_path,
    )  # fmt: skip
    assert built.returncode == 0, built
    uploaded = fades("fn", "upload", "counter.fart", cwd=tmp_path, env=env)
    assert uploaded.returncode == 0, uploaded
    submitted = fades("task", "submit", "counter.yaml", cwd=tmp_path, env=env)
    assert submitted.returncode == 0, submitted
    task_id = submitted.stdout.split()[1]
    try:
        got = fades("task", "get", task_id, cwd=tmp_path, env=env)
        assert got.returncode == 0, got
        assert f"task {task_id}" in got.stdout and ": dispatched" in got.stdout, got.stdout
        assert "bytes read at the edge" not in got.stdout, got.stdout  # not a made-up 0
    finally:
        cancelled = fades("task", "cancel", task_id, cwd=tmp_path, env=env)
    assert cancelled.returncode == 0, cancelled


def test_a_bad_file_among_several_is_named(cluster: Any, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "credentials: {tenant: facilities}\n"
        "data:\n  - {name: t, select: {location: room1}}\n"
        "function: {artifact: x, memory_mib: 0}\n"
    )
    good = str(REPO / "examples" / "tasks" / "mean_core.yaml")
    proc = fades("task", "submit", good, "bad.yaml", cwd=tmp_path, env=_env(cluster))
    assert proc.returncode == 2, proc
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        "error (TaskValidationError): invalid task file bad.yaml: function.memory_mib: Input "
        "should be greater than or equal to 1"
    ], lines
    ok = fades("task", "submit", good, good, cwd=tmp_path, env=_env(cluster))
    assert ok.returncode == 0, ok


def test_data_load_of_an_unknown_name_says_what_it_takes(tmp_path: Path) -> None:
    home = str(tmp_path / "h")
    proc = fades("data", "load", "river-ocupancy", "--home", home, cwd=tmp_path)
    assert proc.returncode == 2, proc
    line = proc.stderr.strip()
    assert "no data set or CSV file named 'river-ocupancy'" in line, line
    assert "'river-occupancy'" in line and "cannot read CSV file" not in line
    (tmp_path / "r.csv").write_text(
        "ts,location,sensor_type,value,unit,device\n1700000000,lab,temperature,20.5,C,t1\n"
    )
    ok = fades("data", "load", "r.csv", "--home", home, cwd=tmp_path)
    assert ok.returncode == 0 and "loaded 1 readings" in ok.stdout, ok


def test_task_submit_exit_status_is_2_when_nothing_was_accepted_and_1_when_some_was(
    cluster: Any, tmp_path: Path
) -> None:
    """One rule for one file and a batch: 2 = nothing accepted (safe to fix and resubmit),
    1 = some accepted but not all ended well, 0 = all accepted (and done with --wait)."""
    env = _env(cluster)
    good = str(REPO / "examples/tasks/mean_core.yaml")
    for name in ("nowhere1.yaml", "nowhere2.yaml"):
        (tmp_path / name).write_text(
            "credentials: {tenant: facilities}\n"
            "data:\n  - {name: t, select: {location: no-such-room, sensor_type: temperature}}\n"
            "function: {artifact: mean_core}\n"
        )
    one = fades("task", "submit", "nowhere1.yaml", cwd=tmp_path, env=env)
    assert one.returncode == 2, one
    both = fades("task", "submit", "nowhere1.yaml", "nowhere2.yaml", cwd=tmp_path, env=env)
    assert both.returncode == 2, both  # every task of the batch refused: as for one file
    assert both.stdout.count("refused") == 2, both.stdout
    mixed = fades(
        "task", "submit", good, "nowhere1.yaml", "--json", "--wait", cwd=tmp_path, env=env
    )
    assert mixed.returncode == 1, mixed
    rows = json.loads(mixed.stdout)
    assert [r["accepted"] for r in rows] == [True, False], rows
    assert rows[0]["outcome"]["status"] == "done", rows
    fine = fades("task", "submit", good, good, "--wait", cwd=tmp_path, env=env)
    assert fine.returncode == 0, fine
    missing = fades("task", "submit", "absent.yaml", good, cwd=tmp_path, env=env)
    assert missing.returncode == 2, missing  # a file that does not load: nothing sent


def test_submit_wait_json_that_gives_up_prints_only_json_on_stdout(
    cluster: Any, tmp_path: Path
) -> None:
    """The "still dispatched after N s" notice goes to stderr: stdout stays one JSON value."""
    env = _env(cluster)
    task = yaml.safe_load((REPO / "examples" / "tasks" / "mean_core.yaml").read_text())
    task["credentials"]["task_id"] = "gives-up-1"
    task["function"] |= {"mode": "persistent", "period_s": 1}
    (tmp_path / "endless.yaml").write_text(yaml.safe_dump(task))
    waited = fades(
        "task", "submit", "endless.yaml", "--wait", "--timeout", "1", "--json",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    try:
        assert waited.returncode == 1, waited  # still going when the wait gave up
        info = json.loads(waited.stdout)
        assert info["task_id"] == "gives-up-1" and info["status"] == "dispatched", info
        assert "task gives-up-1 is still dispatched after 1 s" in waited.stderr, waited.stderr
    finally:
        cancelled = fades("task", "cancel", "gives-up-1", cwd=tmp_path, env=env)
    assert cancelled.returncode == 0, cancelled
