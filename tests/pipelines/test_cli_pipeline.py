"""``fades pipeline plan|submit|list|status|runs|run|cancel`` as subprocesses against a real
controller (nodes are registry entries; the stage events a node would send are put on the
events stream by the test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from controller.conftest import FACILITIES, Bed  # type: ignore[import-not-found]
from fades.fabric import EmbeddedNats
from fades.functions.keys import SigningKey

from .test_service import _events, chain, cluster, event


@pytest.fixture
def cli_bed(nats_server: EmbeddedNats, tmp_path: Path, signing_key: SigningKey) -> Iterator[Bed]:
    b = Bed(nats_server, tmp_path, signing_key)
    try:
        yield b
    finally:
        b.close()


def fades(bed: Bed, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fades", "pipeline", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ) | {"FADES_CONTROLLER": bed.url, "FADES_TOKEN": FACILITIES},
    )


def test_the_cli_plans_submits_watches_and_cancels(
    cli_bed: Bed, signing_key: SigningKey, tmp_path: Path
) -> None:
    bed = cli_bed
    cluster(bed, signing_key)
    spec = chain(runs=1)
    good = tmp_path / "chain.yaml"
    good.write_text(yaml.safe_dump(spec))

    # a malformed spec: problems named by stage, exit 2, nothing sent
    bad = tmp_path / "bad.yaml"
    bad_spec = chain()
    bad_spec["stages"][1]["when"] = "x = = 1"
    bad.write_text(yaml.safe_dump(bad_spec))
    proc = fades(bed, "plan", str(bad))
    assert proc.returncode == 2, proc.stderr
    assert "stages.b.when" in proc.stderr and "guard syntax error" in proc.stderr
    # an unknown function is the controller's to find: 422, named, exit 2
    unknown = tmp_path / "unknown.yaml"
    u = chain()
    u["stages"][2]["function"]["artifact"] = "missing-fn"
    unknown.write_text(yaml.safe_dump(u))
    proc = fades(bed, "submit", str(unknown))
    assert proc.returncode == 2 and "stages.c.function.artifact" in proc.stderr, proc.stderr

    proc = fades(bed, "plan", str(good))
    assert proc.returncode == 0, proc.stderr
    for word in ("stage", "role", "node", "mode", "why", "start", "finale", "n1", "n2"):
        assert word in proc.stdout

    proc = fades(bed, "submit", str(good), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["runs"] == ["r000001"]

    # a node reports the run's stages (with a hostile error text in one of them)
    evs = [event("r000001", s, "done") for s in "ab"] + [
        event("r000001", "c", "done", result={"warn": "\x1b[31m[bold]ice[/bold]"})
    ]
    bed.run(_events(bed.nats.url, evs))
    with bed.client() as c:
        assert c.pipeline_run("chain", "r000001", wait=30)["status"] == "done"

    proc = fades(bed, "runs", "chain", "r000001")
    assert proc.returncode == 0, proc.stderr
    assert "timeline" in proc.stdout and "compute" in proc.stdout and "done" in proc.stdout
    assert "\x1b" not in proc.stdout  # escaped, not obeyed
    assert "[bold]ice[/bold]" in proc.stdout  # printed literally, not as markup

    proc = fades(bed, "runs", "chain")
    assert proc.returncode == 0 and "r000001" in proc.stdout, proc.stderr
    proc = fades(bed, "list")
    assert proc.returncode == 0 and "chain" in proc.stdout and "active" in proc.stdout
    proc = fades(bed, "status", "chain")
    assert proc.returncode == 0, proc.stderr
    assert "queued" in proc.stdout and "when full: refuse" in proc.stdout
    proc = fades(bed, "status", "chain", "--json")
    assert json.loads(proc.stdout)["runs"]["done"] == 1

    proc = fades(bed, "run", "chain", "--count", "2", "--json")
    assert json.loads(proc.stdout)["runs"] == ["r000002", "r000003"], proc.stderr
    proc = fades(bed, "cancel", "chain")
    assert proc.returncode == 0 and "cancelled" in proc.stdout
    proc = fades(bed, "run", "chain")
    assert proc.returncode == 2 and "PipelineNotFound" in proc.stderr
    proc = fades(bed, "status", "nothing")
    assert proc.returncode == 2 and "no pipeline 'nothing'" in proc.stderr
