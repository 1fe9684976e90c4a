"""``fades controller start``, ``fades fn upload`` and ``fades task submit`` as subprocesses."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from fades.fabric.server import free_port

from .conftest import Bed
from .test_api import artifact_of

COUNT = """
def main(data, params):
    return {"rows": sum(len(ds) for ds in data.values())}
"""


def read_line(proc: subprocess.Popen[str], startswith: str, timeout: float) -> list[str]:
    """Lines of stdout up to and including the first that starts with ``startswith``."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not sel.select(max(0.0, deadline - time.monotonic())):
            break
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith(startswith):
            return lines
    raise AssertionError(f"no line starting {startswith!r} within {timeout} s; got {lines}")


def fades(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fades", *args], capture_output=True, text=True, timeout=timeout
    )


def test_controller_start_serves_the_api_and_the_cli_talks_to_it(
    bed: Bed, tmp_path: Path, prepare_home: Any, make_task: Any
) -> None:
    home = tmp_path / "ctl"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FADES_NATS")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fades",
            "controller",
            "start",
            "--nats",
            bed.nats.url,
            "--home",
            str(home),
            "--http",
            f"127.0.0.1:{port}",
            "--down-after",
            "5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        lines = read_line(proc, "controller ready ", timeout=120)
        url = lines[-1].removeprefix("controller ready ")
        assert url == f"http://127.0.0.1:{port}"
        assert any(f"created {home / 'tokens.yaml'}" in line for line in lines)
        tokens = yaml.safe_load((home / "tokens.yaml").read_text())["tokens"]
        (token,) = [t for t, tenant in tokens.items() if tenant == "facilities"]
        assert (home / "tokens.yaml").stat().st_mode & 0o077 == 0

        docs = httpx.get(f"{url}/docs", timeout=30)
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        paths = httpx.get(f"{url}/openapi.json", timeout=30).json()["paths"]
        assert {"/v1/tasks", "/v1/tasks/{task_id}", "/v1/nodes", "/v1/functions"} <= set(paths)
        assert httpx.get(f"{url}/v1/nodes", timeout=30).status_code == 401

        # the CLI client against it, with a node on the fabric
        node_home = prepare_home("edge", functions={"count": COUNT})
        (home / "trusted").mkdir(exist_ok=True)
        for pub in (node_home / "trusted").iterdir():
            (home / "trusted" / pub.name).write_bytes(pub.read_bytes())
        bed.agent("edge", node_home)
        art = tmp_path / "count.fart"
        art.write_bytes(artifact_of(node_home, "count"))
        task_file = tmp_path / "task.yaml"
        task_file.write_text(yaml.safe_dump(make_task("count", memory_mib=32)))

        env_args = ("--controller", url, "--token", token)
        up = fades("fn", "upload", str(art), *env_args)
        assert up.returncode == 0, up.stderr
        assert "uploaded python function count" in up.stdout
        bad = fades("fn", "upload", str(task_file), *env_args)
        assert bad.returncode == 2 and "ArtifactFormatError" in bad.stderr

        auth = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait for the node's registration
            if any(n["up"] for n in httpx.get(f"{url}/v1/nodes", headers=auth).json()):
                break
            time.sleep(0.05)
        run = fades("task", "submit", str(task_file), *env_args, "--wait", "--json")
        assert run.returncode == 0, run.stderr
        info = json.loads(run.stdout)
        assert info["status"] == "done" and info["node"] == "edge"
        assert info["result"]["rows"] > 0
        # as a person reads it: the receipt first (with the id), then the outcome
        task_file2 = tmp_path / "task2.yaml"
        task2 = make_task("count", memory_mib=32, task_id="cli-shown")
        task_file2.write_text(yaml.safe_dump(task2))
        shown_run = fades("task", "submit", str(task_file2), *env_args, "--wait")
        assert shown_run.returncode == 0, shown_run.stderr
        first, *rest = shown_run.stdout.splitlines()
        assert first.startswith("task cli-shown accepted: edge on node edge"), first
        assert "done" in "\n".join(rest)
        listed = fades("task", "list", *env_args, "--json")
        assert listed.returncode == 0, listed.stderr
        assert info["task_id"] in [r["task_id"] for r in json.loads(listed.stdout)]
        got = fades("task", "get", info["task_id"], *env_args, "--json")
        assert json.loads(got.stdout)["result"] == info["result"]
        table = fades("nodes", *env_args)
        assert table.returncode == 0 and "edge" in table.stdout and "up" in table.stdout
        gone = fades("task", "cancel", info["task_id"], *env_args)
        assert gone.returncode == 2 and "TaskNotCancellable" in gone.stderr  # already done
        shown = fades("task", "submit", str(task_file), "--controller", url, "--token", "wrong")
        assert shown.returncode == 2 and "Unauthorized" in shown.stderr

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_controller_start_says_why_it_cannot_listen(bed: Bed, tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = fades(
            "controller",
            "start",
            "--nats",
            bed.nats.url,
            "--home",
            str(tmp_path / "c"),
            "--http",
            f"127.0.0.1:{port}",
            timeout=30,
        )
    assert res.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in res.stderr


def test_controller_start_refuses_an_unknown_placer(tmp_path: Path) -> None:
    res = fades(
        "controller", "start", "--home", str(tmp_path / "c"), "--placer", "moon", timeout=30
    )
    assert res.returncode == 2
    assert "--placer 'moon': expected one of locality, nimbus" in res.stderr
