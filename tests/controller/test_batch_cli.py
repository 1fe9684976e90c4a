"""``fades task submit FILE... --wait`` (a subprocess) uses the batch endpoint and the result
stream: each file accepted or refused on its own, outcomes from a real node agent."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from .conftest import FACILITIES, Bed
from .test_api import artifact_of
from .test_cli import COUNT, fades


def test_submit_many_files_waits_for_every_outcome_and_names_the_refused_one(
    bed: Bed, tmp_path: Path, prepare_home: Any, make_task: Any
) -> None:
    bed.start_controller()
    node_home = prepare_home("edge", functions={"count": COUNT})
    home = bed.controller_home()
    for pub in (node_home / "trusted").iterdir():
        (home / "trusted" / pub.name).write_bytes(pub.read_bytes())
    bed.agent("edge", node_home)
    with bed.client() as c:
        c.upload(artifact_of(node_home, "count"))
        deadline = time.monotonic() + 60
        while not any(n["up"] for n in c.nodes()) and time.monotonic() < deadline:
            time.sleep(0.05)
    files = []
    for i in range(3):
        f = tmp_path / f"t{i}.yaml"
        f.write_text(yaml.safe_dump(make_task("count", memory_mib=32)))
        files.append(str(f))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(make_task("no-such-function", memory_mib=32)))
    args = ("--controller", bed.url, "--token", FACILITIES)
    run = fades("task", "submit", *files, str(bad), *args, "--wait", "--json", timeout=180)
    assert run.returncode == 1, run.stderr  # one was refused
    rows = json.loads(run.stdout)
    assert [r["file"] for r in rows] == [*files, str(bad)]
    assert not rows[3]["accepted"] and rows[3]["error_kind"] == "ArtifactError"
    for r in rows[:3]:
        assert r["accepted"] and r["outcome"]["status"] == "done", r
        assert r["outcome"]["result"]["rows"] > 0
    # all good: exit 0, and the table names each task
    ok = fades("task", "submit", *files[:2], *args, "--wait", timeout=180)
    # the same files again: duplicate ids are not an issue (each load gets a fresh id)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count("done") == 2
    listed = httpx.get(
        bed.url + "/v1/tasks", headers={"Authorization": f"Bearer {FACILITIES}"}, timeout=30
    ).json()
    assert len(listed) == 5
