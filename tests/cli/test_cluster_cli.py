"""The CLI against a real controller (subprocesses): mistakes a new user makes are one line
that says what to do instead, and the next good command works."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.conftest import FACILITIES, Bed  # type: ignore[import-not-found]
from fades.fabric import EmbeddedNats
from fades.functions.keys import SigningKey


@pytest.fixture
def bed(nats_server: EmbeddedNats, tmp_path: Path, signing_key: SigningKey) -> Iterator[Bed]:
    b = Bed(nats_server, tmp_path, signing_key)
    try:
        b.start_controller()
        yield b
    finally:
        b.close()


def fades(bed: Bed, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fades", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=dict(os.environ) | {"FADES_CONTROLLER": bed.url, "FADES_TOKEN": FACILITIES},
        check=False,
    )


def test_pipeline_run_of_a_file_says_to_submit_it(bed: Bed, tmp_path: Path) -> None:
    (tmp_path / "hot.yaml").write_text("name: hot\n")
    proc = fades(bed, "pipeline", "run", "hot.yaml", cwd=tmp_path)
    assert proc.returncode == 2, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error (PipelineNotFound): no pipeline 'hot.yaml'"), lines
    assert "to deploy the file, 'fades pipeline submit hot.yaml'" in lines[0]
    # a plain unknown name keeps the plain message
    other = fades(bed, "pipeline", "run", "nothing", cwd=tmp_path)
    assert other.returncode == 2 and "pipeline submit" not in other.stderr, other
    listed = fades(bed, "pipeline", "list", cwd=tmp_path)
    assert listed.returncode == 0, listed


def test_task_get_wait_follows_a_submitted_task_until_it_ends(tmp_path: Path) -> None:
    from fades.cluster import LocalCluster

    repo = Path(__file__).resolve().parents[2]
    cluster = LocalCluster(tmp_path / "up", nodes=1, days=0.05, sensors=False)
    cluster.prepare()
    cluster.start()
    try:
        env = {"FADES_CONTROLLER": cluster.url, "FADES_TOKEN": cluster.token}
        submitted = subprocess.run(
            [sys.executable, "-m", "fades", "task", "submit", "examples/tasks/mean_core.yaml"],
            capture_output=True, text=True, timeout=120, cwd=repo,
            env=dict(os.environ) | env, check=False,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted
        task_id = submitted.stdout.split()[1]
        got = subprocess.run(
            [sys.executable, "-m", "fades", "task", "get", task_id, "--wait", "--timeout", "60"],
            capture_output=True, text=True, timeout=120, cwd=repo,
            env=dict(os.environ) | env, check=False,
        )  # fmt: skip
        assert got.returncode == 0, got
        assert f"task {task_id}" in got.stdout and "done" in got.stdout, got.stdout
        assert '"mean"' in got.stdout
        logs = subprocess.run(
            [sys.executable, "-m", "fades", "task", "logs", task_id],
            capture_output=True, text=True, timeout=120, cwd=repo,
            env=dict(os.environ) | env, check=False,
        )  # fmt: skip
        assert logs.returncode == 0, logs
        assert f"task {task_id} (done): no output or traceback captured" in logs.stdout, logs
        # without a controller there is nothing to wait on: one line
        local = subprocess.run(
            [sys.executable, "-m", "fades", "task", "get", task_id, "--wait"],
            capture_output=True, text=True, timeout=120, cwd=repo,
            env={k: v for k, v in os.environ.items() if k != "FADES_CONTROLLER"}, check=False,
        )  # fmt: skip
        assert local.returncode == 2 and local.stderr.startswith("error (UsageError):"), local
        assert "--wait: needs --controller" in local.stderr
    finally:
        cluster.stop()
