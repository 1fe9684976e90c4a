"""The ``fades`` command line, run as a subprocess on a node folder in tmp_path.

FADES_CACHE is left at its default so the Python runtime is built and compiled only once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
FADES = str(Path(sys.executable).with_name("fades"))


def fades(
    *args: str, home: Path, timeout: float = 180, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FADES_HOME=str(home), COLUMNS="200")
    env.pop("FORCE_COLOR", None)
    return subprocess.run(
        [FADES, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd or REPO,
        check=False,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A node set up entirely through the CLI: key, functions, runtime and data."""
    h = tmp_path_factory.mktemp("cli") / "node"
    out = ok(fades("keys", "generate", "--home", str(h), home=h))
    assert "now trusts key" in out
    assert (h / "keys" / "signing.key").exists() and list((h / "trusted").glob("*.pub"))
    for src in ("aqi.py", "minmaxmean.py", "mean_core.wat"):
        out = ok(fades("fn", "build", str(EXAMPLES / "functions" / src), "--home", str(h), home=h))
        assert "installed" in out
    out = ok(fades("fn", "runtime", "--home", str(h), home=h))
    assert "runtime sha256:" in out
    out = ok(fades("data", "generate", "--days", "0.2", "--home", str(h), home=h))
    assert "readings to" in out
    return h


def test_the_cli_sets_up_a_node_with_keys_functions_runtime_and_data(home: Path) -> None:
    assert len(list((home / "artifacts").glob("*.fart"))) == 4
    assert (home / "readings.db").stat().st_size > 0


def test_fn_list_shows_the_installed_functions(home: Path) -> None:
    out = ok(fades("fn", "list", "--home", str(home), home=home))
    for name, kind in (("aqi", "python"), ("minmaxmean", "python"), ("mean_core", "core")):
        assert any(name in line and kind in line for line in out.splitlines()), out
    assert "fades-python-runtime" not in out  # the runtime is not a function


def test_task_run_prints_the_record_as_json(home: Path) -> None:
    out = ok(
        fades(
            "task",
            "run",
            str(EXAMPLES / "tasks" / "aqi.yaml"),
            "--home",
            str(home),
            "--json",
            home=home,
        )
    )
    rec = json.loads(out)
    assert rec["status"] == "done", rec
    assert rec["error"] is None
    assert {"retrieval", "transfer", "start", "compute", "result", "total"} <= set(rec["timing"])


def test_the_aqi_example_finds_data_right_after_data_generate(home: Path) -> None:
    out = ok(fades("task", "run", str(EXAMPLES / "tasks" / "aqi.yaml"), "--json", home=home))
    rec = json.loads(out)
    assert rec["status"] == "done"
    assert rec["result"], "the aqi task selected no readings"


def test_task_run_of_a_core_module_returns_its_result(home: Path) -> None:
    out = ok(fades("task", "run", str(EXAMPLES / "tasks" / "mean_core.yaml"), "--json", home=home))
    rec = json.loads(out)  # FADES_HOME alone selects the node
    assert rec["status"] == "done"
    assert rec["result"]["count"] > 0
    assert rec["bytes_read"] > rec["bytes_returned"] > 0


def test_task_run_prints_a_timing_table(home: Path) -> None:
    out = ok(fades("task", "run", str(EXAMPLES / "tasks" / "mean_core.yaml"), home=home))
    assert "done" in out
    assert "where the time went" in out
    assert "bytes read at the edge" in out


BAD_TASKS = {
    "missing-tenant": (
        "credentials: {}\ndata: [{name: t}]\nfunction: {artifact: aqi}\n",
        "credentials.tenant",
    ),
    "bad-priority": (
        "credentials: {tenant: a, priority: 11}\ndata: [{name: t}]\nfunction: {artifact: aqi}\n",
        "credentials.priority",
    ),
    "empty-data": ("credentials: {tenant: a}\ndata: []\nfunction: {artifact: aqi}\n", "data"),
    "bad-artifact": (
        "credentials: {tenant: a}\ndata: [{name: t}]\nfunction: {artifact: 'sha256:12'}\n",
        "function.artifact",
    ),
    "unknown-field": (
        "credentials: {tenant: a}\ndata: [{name: t}]\nfunction: {artifact: aqi, cpu: 2}\n",
        "function.cpu",
    ),
    "not-a-mapping": ("- just\n- a list\n", "expected a mapping"),
}


@pytest.mark.parametrize("case", list(BAD_TASKS))
def test_a_malformed_task_file_exits_2_with_one_error_line(
    case: str, home: Path, tmp_path: Path
) -> None:
    text, field = BAD_TASKS[case]
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    proc = fades("task", "run", str(bad), "--home", str(home), home=home)
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error (TaskValidationError): invalid task")
    assert field in lines[0]


def test_invalid_yaml_exits_2_with_one_error_line(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("credentials: [unclosed\n")
    proc = fades("task", "run", str(bad), "--home", str(home), home=home)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "not valid YAML/JSON" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_invalid_yaml_exits_2_without_a_traceback(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("credentials: [unclosed\n")
    proc = fades("task", "run", str(bad), "--home", str(home), home=home)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error (TaskValidationError): invalid task:")
    assert "not valid YAML/JSON" in proc.stderr


def test_a_missing_task_file_exits_2(home: Path, tmp_path: Path) -> None:
    proc = fades("task", "run", str(tmp_path / "nope.yaml"), home=home)
    assert proc.returncode == 2
    assert "cannot read task file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_task_for_an_unknown_function_exits_2(home: Path, tmp_path: Path) -> None:
    t = tmp_path / "t.yaml"
    t.write_text("credentials: {tenant: a}\ndata: [{name: t}]\nfunction: {artifact: nope}\n")
    proc = fades("task", "run", str(t), home=home)
    assert proc.returncode == 2
    assert "no function named 'nope'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_task_that_fails_in_the_sandbox_exits_1_with_the_reason(
    home: Path, tmp_path: Path
) -> None:
    src = tmp_path / "spin.py"
    src.write_text("def main(data, params):\n    while True:\n        pass\n")
    ok(fades("fn", "build", str(src), home=home))
    t = tmp_path / "t.yaml"
    t.write_text(
        "credentials: {tenant: a}\ndata: [{name: t, select: {last: 5}}]\n"
        "function: {artifact: spin, memory_mib: 32, time_budget_ms: 300}\n"
    )
    proc = fades("task", "run", str(t), "--json", home=home)
    assert proc.returncode == 1
    rec = json.loads(proc.stdout)
    assert (rec["status"], rec["error_kind"]) == ("failed", "TimeLimitExceeded")


def test_building_without_a_key_exits_2_naming_the_fix(tmp_path: Path) -> None:
    h = tmp_path / "empty"
    proc = fades("fn", "build", str(EXAMPLES / "functions" / "aqi.py"), "--home", str(h), home=h)
    assert proc.returncode == 2
    assert "no signing key" in proc.stderr and "fades keys generate" in proc.stderr


def test_fn_add_refuses_a_tampered_artifact_file(home: Path, tmp_path: Path) -> None:
    art = tmp_path / "aqi.fart"
    ok(
        fades(
            "fn",
            "build",
            str(EXAMPLES / "functions" / "aqi.py"),
            "--out",
            str(art),
            "--no-install",
            home=home,
        )
    )
    raw = bytearray(art.read_bytes())
    raw[-4] ^= 0x01
    art.write_bytes(bytes(raw))
    proc = fades("fn", "add", str(art), home=home)
    assert proc.returncode == 2
    assert "error (SignatureError)" in proc.stderr and "tampered" in proc.stderr


def test_the_demo_runs_end_to_end(tmp_path: Path) -> None:
    h = tmp_path / "demo"
    out = ok(fades("demo", "--home", str(h), "--days", "1", "--rate", "60", home=h, timeout=300))
    text = " ".join(out.split())  # undo rich's line wrapping
    assert "4 tasks in" in text
    rows = {ln.split("│")[1].strip(): ln for ln in out.splitlines() if ln.startswith("│ ")}
    for name in ("aqi", "mean_core", "minmaxmean", "occupancy"):
        assert " done " in rows[name], out  # its row in the timing table
    assert "failed" not in out
    assert "tampered artifact refused: SignatureError" in text
    assert "access refused: AccessDenied" in text
    assert "runaway function: TimeLimitExceeded: time limit 300 ms exceeded" in text
    assert "next task on the same node: done" in text
    assert "bytes read next to the data:" in text and "less leaves the edge" in text
    assert "(this is a bug)" not in text
    # a second run reuses its own folder, but refuses to clobber one it did not make
    other = tmp_path / "mine"
    other.mkdir()
    proc = fades("demo", "--home", str(other), home=other)
    assert proc.returncode == 2
    assert "was not made by 'fades demo'" in proc.stderr
