"""What the second fresh-clone trial (trial6) found, met where the user meets it: ``fades``
as a subprocess, real nats-server, real sandboxes. Each test fails without its fix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

FADES = [sys.executable, "-m", "fades"]


def start_agent(home: Path, url: str, name: str = "edge1") -> subprocess.Popen[str]:
    """``fades node start`` on HOME; returns once it says ready."""
    proc = subprocess.Popen(
        [
            *FADES,
            "node",
            "start",
            "--name",
            name,
            "--nats",
            url,
            "--data",
            str(home),
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
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"node did not start: {line!r} {err}")
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def test_a_second_agent_on_a_node_folder_is_refused_and_a_killed_one_frees_it(
    tmp_path: Path, nats_server: Any
) -> None:
    home = tmp_path / "edge1"
    first = start_agent(home, nats_server.url)
    try:
        second = subprocess.run(
            [
                *FADES,
                "node",
                "start",
                "--name",
                "edge2",
                "--nats",
                nats_server.url,
                "--data",
                str(home),
                "--no-ingest",
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert second.returncode == 2, second
        assert second.stderr.strip() == (
            f"error (NodeFolderError): {home} (--data) is in use by node edge1 "
            f"(pid {first.pid}); stop it, or pass another --data"
        )
        assert first.poll() is None  # the node that holds the folder goes on
        # a SIGKILLed agent leaves no stale lock: its restart on the folder starts
        first.kill()
        first.wait(timeout=30)
        again = start_agent(home, nats_server.url)
        stop(again)
        assert again.returncode == 0, again.stderr.read() if again.stderr else ""
    finally:
        stop(first)


def test_the_node_lock_is_not_inherited_by_the_agents_sandbox_workers(
    tmp_path: Path, nats_server: Any
) -> None:
    """A worker process that outlives its SIGKILLed agent must not hold the folder."""
    home = tmp_path / "edge1"
    first = start_agent(home, nats_server.url)
    try:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(first.pid)], capture_output=True, text=True
        ).stdout.split()
        for pid in out:
            fds = Path(f"/proc/{pid}/fd")
            if fds.exists():
                held = {os.readlink(fd) for fd in fds.iterdir() if fd.is_symlink()}
                assert str(home / "node.lock") not in held
    finally:
        stop(first)


COUNTER = """
count = 0

def main(data, params):
    global count
    count += 1
    return {"count": count}
"""


def persistent_task(path: Path, sensor_type: str) -> Path:
    path.write_text(
        "credentials: {tenant: facilities}\n"
        "data:\n"
        f"  - {{name: t, select: {{location: room1, sensor_type: {sensor_type}, last: 5}}}}\n"
        "function: {artifact: counter, mode: persistent, period_s: 0.2, invocations: 2}\n"
    )
    return path


def test_a_persistent_task_whose_invocations_all_failed_says_why_and_exits_1(
    tmp_path: Path, prepare_home: Any
) -> None:
    home = prepare_home(functions={"counter": COUNTER})
    typo = persistent_task(tmp_path / "typo.yaml", "temprature")  # matches no rows
    ran = subprocess.run(
        [*FADES, "task", "run", str(typo), "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 1, ran
    assert '"failed": 2' in ran.stdout
    assert "2 of 2 invocation(s) failed; the last (invocation 1): NoData: no rows matched" in (
        " ".join(ran.stderr.split())
    ), ran.stderr
    task_id = ran.stdout.split(" task ", 1)[1].split(":", 1)[0]
    got = subprocess.run(
        [*FADES, "task", "get", task_id, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert got.returncode == 0, got
    assert "2 of 2 invocation(s) failed" in got.stderr
    # the same task on a selection that matches: no note, exit 0
    good = persistent_task(tmp_path / "good.yaml", "temperature")
    ok = subprocess.run(
        [*FADES, "task", "run", str(good), "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok
    assert '"failed": 0' in ok.stdout and "invocation(s) failed" not in ok.stderr


def test_a_second_fades_up_on_a_running_clusters_folder_is_refused_before_its_imports(
    tmp_path: Path,
) -> None:
    import fcntl

    from fades.cli.local import CLUSTER_LOCK
    from fades.cluster import LOCK

    assert CLUSTER_LOCK == LOCK
    home = tmp_path / "up"
    home.mkdir()
    fd = os.open(home / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:  # this test process plays the running cluster, as LocalCluster._lock does
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        second = subprocess.run(
            [
                sys.executable,
                "-X",
                "importtime",
                "-m",
                "fades",
                "up",
                "--home",
                str(home),
                "--nodes",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        os.close(fd)
    assert second.returncode == 2, second
    lines = [ln for ln in second.stderr.splitlines() if not ln.startswith("import time:")]
    assert lines == [
        f"error (ClusterInUse): {home} is in use by a running cluster (pid {os.getpid()}); "
        "stop it (Ctrl-C) or choose another folder with --home"
    ]
    # refused before the cluster's own imports (scipy, the testbed: seconds on a busy machine)
    imported = second.stderr
    assert "scipy" not in imported and "fades.cluster" not in imported
    assert sorted(p.name for p in home.iterdir()) == [LOCK]  # nothing made or replaced


def test_a_wat_syntax_error_names_its_line_and_column(tmp_path: Path) -> None:
    home = tmp_path / "node"
    keys = subprocess.run(
        [*FADES, "keys", "generate", "--home", str(home)], capture_output=True, text=True
    )
    assert keys.returncode == 0, keys
    bad = tmp_path / "bad.wat"
    bad.write_text('(module\n  (memory (export "memory") 1)\n  (func (export "f") i32.bogus)\n)\n')
    built = subprocess.run(
        [*FADES, "fn", "build", str(bad), "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 2, built
    assert built.stderr.startswith(
        f"error (BuildError): {bad}:3:22: neither a wasm binary nor valid WAT: "
    ), built.stderr
    assert len(built.stderr.strip().splitlines()) == 1
    # the next good build works
    good = tmp_path / "good.wat"
    good.write_text(bad.read_text().replace("i32.bogus", "nop"))
    ok = subprocess.run(
        [
            *FADES,
            "fn",
            "build",
            str(good),
            "--home",
            str(home),
            "--no-install",
            "--out",
            str(tmp_path / "good.fart"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 2 and "lacks the export(s)" in ok.stderr  # parsed: ABI checked


def test_an_ephemeral_result_shaped_like_a_summary_gets_no_invocation_note(
    tmp_path: Path, prepare_home: Any
) -> None:
    home = prepare_home(
        functions={"looks": "def main(data, params):\n    return {'invocations': 2, 'failed': 2}\n"}
    )
    task = tmp_path / "t.yaml"
    task.write_text(
        "credentials: {tenant: facilities}\n"
        "data: [{name: t, select: {location: room1, sensor_type: temperature, last: 5}}]\n"
        "function: {artifact: looks}\n"
    )
    ran = subprocess.run(
        [*FADES, "task", "run", str(task), "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran
    assert "invocation(s) failed" not in ran.stderr
