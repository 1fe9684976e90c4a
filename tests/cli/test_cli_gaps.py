"""CLI gaps a fresh-clone trial found (F3, F4, F8, F12, F13), met where the user meets
them: ``fades`` as a subprocess, its output and exit status."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SRC = str(REPO / "src")
WAT = REPO / "examples" / "functions" / "mean_core.wat"
TASK = REPO / "examples" / "tasks" / "mean_core.yaml"


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=SRC, COLUMNS="200") | (extra or {})
    env.pop("FORCE_COLOR", None)
    env.pop("FADES_HOME", None)
    return env


def fades(*args: str, cwd: Path = REPO, **popen: Any) -> subprocess.CompletedProcess[str]:
    kw: dict[str, Any] = {"capture_output": True} if "stdout" not in popen else {}
    return subprocess.run(
        [sys.executable, "-m", "fades", *args],
        text=True,
        timeout=180,
        cwd=cwd,
        env=_env(),
        check=False,
        **kw,
        **popen,
    )


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A node folder made with the CLI: a key, the core mean function, a little data."""
    home = tmp_path_factory.mktemp("clifix") / "node"
    for args in (
        ("keys", "generate"),
        ("fn", "build", str(WAT)),
        ("data", "generate", "--days", "0.05"),
    ):
        done = fades(*args, "--home", str(home))
        assert done.returncode == 0, done
    return home


def _functions(home: Path) -> list[str]:
    listed = fades("fn", "list", "--home", str(home), "--json")
    assert listed.returncode == 0, listed
    return [row["name"] for row in yaml.safe_load(listed.stdout)]


# --- F12: fn build --no-install without --out ---------------------------------------------------
def test_build_no_install_without_out_writes_the_artifact_here_and_says_where(
    node: Path, tmp_path: Path
) -> None:
    home = tmp_path / "fresh"
    assert fades("keys", "generate", "--home", str(home)).returncode == 0
    work = tmp_path / "work"
    work.mkdir()
    built = fades("fn", "build", str(WAT), "--no-install", "--home", str(home), cwd=work)
    assert built.returncode == 0, built
    assert "wrote mean_core.fart" in built.stdout, built.stdout
    assert (work / "mean_core.fart").read_bytes().startswith(b"FADESART")
    assert "mean_core" not in _functions(home)  # not installed, as asked
    # the file is a real artifact: another node that trusts the key installs it
    added = fades("fn", "add", str(work / "mean_core.fart"), "--home", str(home))
    assert added.returncode == 0, added
    assert "mean_core" in _functions(home)


def test_build_out_into_a_missing_folder_is_refused_before_signing(
    node: Path, tmp_path: Path
) -> None:
    out = tmp_path / "nonexistent" / "dir" / "x.fart"
    refused = fades("fn", "build", str(WAT), "--out", str(out), "--home", str(node))
    assert refused.returncode == 2, refused
    line = one_line(refused)
    assert line.startswith("error (UsageError): --out "), line
    assert f"the folder {out.parent} does not exist" in line, line
    assert "built" not in refused.stdout and "installed" not in refused.stdout
    ok = fades("fn", "build", str(WAT), "--out", str(tmp_path / "x.fart"), "--home", str(node))
    assert ok.returncode == 0, ok
    assert (tmp_path / "x.fart").exists()


# --- F13: --home mistakes -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "command", [("task", "list"), ("fn", "list"), ("keys", "list"), ("data", "info")]
)
def test_home_that_is_a_file_or_missing_is_one_line_and_makes_no_node(
    node: Path, tmp_path: Path, command: tuple[str, ...]
) -> None:
    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0\n")
    refused = fades(*command, "--home", str(a_file))
    assert refused.returncode == 2, refused
    line = one_line(refused)
    assert line.startswith("error (NodeFolderError): "), line
    assert f"{a_file} (--home) is a file, not a node folder" in line, line
    assert "Errno" not in line

    typo = tmp_path / "newhome"
    refused = fades(*command, "--home", str(typo))
    assert refused.returncode == 2, refused
    line = one_line(refused)
    assert line.startswith(f"error (NodeFolderError): no node at {typo} (--home); "), line
    assert f"'fades keys generate --home {typo}'" in line, line
    assert not typo.exists()  # no empty node made at a mistyped path

    good = fades(*command, "--home", str(node))  # the next good command works
    assert good.returncode == 0, good


def test_commands_that_set_a_node_up_still_make_its_folder(tmp_path: Path) -> None:
    home = tmp_path / "new" / "node"
    made = fades("keys", "generate", "--home", str(home))
    assert made.returncode == 0, made
    assert (home / "keys" / "signing.key").exists()
    other = tmp_path / "data-node"
    made = fades("data", "generate", "--days", "0.01", "--home", str(other))
    assert made.returncode == 0, made
    assert (other / "readings.db").exists()
    a_file = tmp_path / "file"
    a_file.write_text("")
    refused = fades("keys", "generate", "--home", str(a_file / "sub"))
    assert refused.returncode == 2, refused
    line = one_line(refused)
    assert line.startswith(f"error (NodeFolderError): cannot create the node folder {a_file}"), line
    assert "Errno" not in line


def test_node_start_on_a_data_path_that_is_a_file_says_so_before_dialling(tmp_path: Path) -> None:
    a_file = tmp_path / "data"
    a_file.write_text("")
    args = ("node", "start", "--name", "edge9", "--nats", "nats://127.0.0.1:9")
    refused = fades(*args, "--data", str(a_file), "--connect-timeout", "1")
    assert refused.returncode == 2, refused
    assert one_line(refused) == (
        f"error (NodeFolderError): {a_file} (--data) is a file, not a node folder: give a folder"
    )


# --- F4: a reader that goes away -----------------------------------------------------------------
@pytest.mark.parametrize(
    "command",
    [
        ("task", "list"),
        ("fn", "list", "--json"),
        ("task", "run", str(TASK), "--json"),
        ("task", "run", str(TASK)),
    ],
)
def test_a_closed_stdout_pipe_exits_141_without_a_word(
    node: Path, command: tuple[str, ...]
) -> None:
    read, write = os.pipe()
    os.close(read)  # `| head -1` that has already left: every write is a broken pipe
    try:
        done = fades(*command, "--home", str(node), stdout=write, stderr=subprocess.PIPE)
    finally:
        os.close(write)
    assert done.returncode == 141, done
    assert done.stderr == "", done.stderr


# --- F3: Ctrl-C on task run ---------------------------------------------------------------------
def _invocations(home: Path, task_id: str) -> int:
    from fades.errors import TaskNotFound
    from fades.node.taskstore import TaskStore

    if not (home / "tasks.db").exists():
        return 0
    store = TaskStore(home / "tasks.db")
    try:
        return len(store.invocations(task_id))
    except TaskNotFound:
        return 0
    finally:
        store.close()


def test_ctrl_c_on_task_run_says_which_task_was_cancelled(node: Path, tmp_path: Path) -> None:
    task = yaml.safe_load(TASK.read_text())
    task["credentials"]["task_id"] = "endless-1"
    task["function"] |= {"mode": "persistent", "period_s": 0.1}
    path = tmp_path / "endless.yaml"
    path.write_text(yaml.safe_dump(task))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fades", "task", "run", str(path), "--home", str(node)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        deadline = time.monotonic() + 120
        while _invocations(node, "endless-1") < 1:  # it runs: Ctrl-C now
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the task never ran"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, errs = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, errs)
    assert errs.strip() == (
        "interrupted: task endless-1 cancelled; nothing left running "
        "(see 'fades task get endless-1')"
    ), errs
    shown = fades("task", "get", "endless-1", "--home", str(node), "--json")
    assert shown.returncode == 0, shown
    record = yaml.safe_load(shown.stdout)
    assert record["status"] == "failed" and record["error_kind"] == "TaskCancelled", record


# --- F8: controller start on a port in use -------------------------------------------------------
@pytest.fixture
def busy_port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def test_controller_start_on_a_port_in_use_writes_nothing(
    busy_port: int, tmp_path: Path, nats_server: Any
) -> None:
    from fades.fabric.server import free_port

    home = tmp_path / "ctl"
    args = ("controller", "start", "--home", str(home), "--nats", nats_server.url)
    refused = fades(*args, "--http", f"127.0.0.1:{busy_port}")
    assert refused.returncode == 2, refused
    line = one_line(refused)
    assert line.startswith(f"error (ControllerError): cannot listen on 127.0.0.1:{busy_port}: ")
    assert "pass another --http" in line, line
    assert refused.stdout == "", refused.stdout  # no "created tokens.yaml"
    assert not home.exists()  # nothing written: not even the folder

    a_file = tmp_path / "a-file"
    a_file.write_text("")
    refused = fades("controller", "start", "--home", str(a_file), "--nats", nats_server.url)
    assert refused.returncode == 2, refused
    line = one_line(refused)
    assert line == (
        f"error (NodeFolderError): {a_file} (--home) is a file, not a controller folder: "
        "give a folder"
    ), line

    proc = subprocess.Popen(  # the same command on a free port serves
        [sys.executable, "-m", "fades", *args, "--http", f"127.0.0.1:{free_port()}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={k: v for k, v in _env().items() if not k.startswith("FADES_NATS")},
    )
    try:
        assert proc.stdout is not None
        seen = []
        for got in proc.stdout:
            seen.append(got)
            if got.startswith("controller ready "):
                break
        assert seen and seen[-1].startswith("controller ready "), seen
        assert (home / "tokens.yaml").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
