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
