"""The ``fades`` command line, run as a subprocess on a node folder in tmp_path.

FADES_CACHE is left at its default so the Python runtime is built and compiled only once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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


# --- nothing a function returns can attack the terminal (issue 16, class 5) -------------------
HOSTILE = (
    "[/bold] [red]x[/red] [link=http://evil]y[/link] \x1b]0;pwned\x07 \x1b[2J\x9b31m \u202eevil"
)
HOSTILE_FN = f"""
def main(data, params):
    if params.get("raise"):
        raise ValueError({HOSTILE!r})
    return {{"text": {HOSTILE!r}, "big": "z" * params.get("big", 0)}}
"""


def _unsafe(text: str) -> list[str]:
    """Characters that would drive a terminal or reorder text, if any reached it."""
    return [c for c in text if c in "\x1b\x07\x9b\u202e" or (ord(c) < 32 and c not in "\n\t")]


@pytest.fixture(scope="module")
def hostile(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("hostile") / "hostile.py"
    src.write_text(HOSTILE_FN)
    ok(fades("fn", "build", str(src), home=home))
    return src


def _hostile_task(tmp_path: Path, **params: object) -> Path:
    t = tmp_path / "t.yaml"
    t.write_text(
        "credentials: {tenant: a}\ndata: [{name: t, select: {last: 5}}]\n"
        f"function: {{artifact: hostile, memory_mib: 64, params: {json.dumps(params)}}}\n"
    )
    return t


def test_a_result_with_markup_and_escape_sequences_is_printed_inert(
    home: Path, hostile: Path, tmp_path: Path
) -> None:
    out = ok(fades("task", "run", str(_hostile_task(tmp_path)), home=home))
    assert "done" in out and "where the time went" in out  # the renderer did not crash
    assert not _unsafe(out), _unsafe(out)
    assert "[/bold]" in out and "[link=http://evil]" in out  # shown literally, not applied
    assert "\\u001b]0;pwned\\u0007" in out and "\\u202eevil" in out  # visible escapes
    # --json keeps the exact value, as valid JSON
    rec = json.loads(ok(fades("task", "run", str(_hostile_task(tmp_path)), "--json", home=home)))
    assert rec["result"]["text"] == HOSTILE


def test_an_error_with_markup_and_escape_sequences_is_printed_inert(
    home: Path, hostile: Path, tmp_path: Path
) -> None:
    proc = fades("task", "run", str(_hostile_task(tmp_path, **{"raise": True})), home=home)
    assert proc.returncode == 1, proc
    text = proc.stdout + proc.stderr
    assert "Traceback (most recent call last)" not in proc.stderr
    assert "failed" in proc.stdout and "[/bold]" in proc.stdout
    assert not _unsafe(text), _unsafe(text)


def test_a_large_result_is_shown_cut_and_whole_with_json(
    home: Path, hostile: Path, tmp_path: Path
) -> None:
    task = _hostile_task(tmp_path, big=200_000)
    out = ok(fades("task", "run", str(task), home=home))
    assert len(out) < 80_000, len(out)
    assert "the full value: --json" in out
    rec = json.loads(ok(fades("task", "run", str(task), "--json", home=home)))
    assert rec["result"]["big"] == "z" * 200_000


def test_a_controller_that_cannot_be_reached_is_one_line_naming_the_url(
    home: Path, tmp_path: Path
) -> None:
    from fades.fabric.server import free_port

    url = f"http://127.0.0.1:{free_port()}"
    t = _hostile_task(tmp_path)
    proc = fades("task", "submit", str(t), "--controller", url, "--token", "x", home=home)
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert url in proc.stderr


BUGGY = """
import sys
from fades.cli import app

@app.command("explode")
def explode() -> None:
    raise RuntimeError("[/bold] boom \\x1b[2J")

app(["explode", *sys.argv[1:]]) if "--debug" not in sys.argv else app(["--debug", "explode"])
"""


def test_an_unexpected_error_is_one_line_with_a_hint_and_the_trace_only_with_debug(
    tmp_path: Path,
) -> None:
    script = tmp_path / "buggy.py"
    script.write_text(BUGGY)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    env.pop("FADES_DEBUG", None)
    run = [sys.executable, str(script)]
    proc = subprocess.run(run, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 1, proc
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("error (unexpected RuntimeError): [/bold] boom \\x1b[2J"), lines
    assert "--debug" in lines[1] and len(lines) == 2, lines
    assert "Traceback" not in proc.stderr
    for debug in ([*run, "--debug"], run):
        denv = env if debug != run else dict(env, FADES_DEBUG="1")
        proc = subprocess.run(
            debug, capture_output=True, text=True, env=denv, timeout=120, check=False
        )
        assert proc.returncode == 1
        assert "Traceback" in proc.stderr and "explode" in proc.stderr
        assert not _unsafe(proc.stderr)


def test_rendering_a_50_mb_error_and_result_takes_well_under_a_second() -> None:
    import time

    from rich.console import Console

    from fades.cli import render

    capture = Console(file=open(os.devnull, "w"), width=120)  # noqa: SIM115
    saved, render.console = render.console, capture
    try:
        huge = "[/red]\x1b[31m" * 5_000_000  # 50 MB of markup and escapes
        t0 = time.perf_counter()
        render.show_outcome(
            {"task_id": "t", "status": "failed", "error_kind": "X", "error": huge,
             "traceback": huge, "logs": huge, "result": {"v": huge}},
        )  # fmt: skip
        elapsed = time.perf_counter() - t0
    finally:
        render.console = saved
        capture.file.close()
    assert elapsed < 5.0, elapsed  # minutes before the bound; generous for a loaded machine


def test_help_and_version_import_no_heavy_module_and_a_missing_extra_is_named() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    run = [sys.executable, "-X", "importtime", "-m", "fades", "--help"]
    proc = subprocess.run(run, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0 and "sim" in proc.stdout, proc
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()}
    assert not imported & {"numpy", "matplotlib", "scipy", "wasmtime", "fastapi"}, imported
    proc = subprocess.run(
        [sys.executable, "-m", "fades", "--version"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("fades "), proc
    script = "import sys; sys.modules['matplotlib'] = None; from fades.cli import app; app()"
    proc = subprocess.run(
        [sys.executable, "-c", script, "sim", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc
    assert "pip install 'fades[sim]'" in proc.stderr and "matplotlib" in proc.stderr, proc


def test_fades_up_restarts_a_killed_node_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    import re
    import signal
    import time

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = tmp_path / "up.out"
    cmd = [sys.executable, "-m", "fades", "up", "--nodes", "2", "--home", str(tmp_path / "up")]
    with out.open("w") as sink:
        up = subprocess.Popen([*cmd, "--duration", "300"], stdout=sink, stderr=sink, env=env)
    try:

        def wait_for(text: str, timeout: float = 120.0) -> str:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if text in (seen := out.read_text()):
                    return seen
                assert up.poll() is None, out.read_text()
                time.sleep(0.2)
            raise AssertionError(f"{text!r} not printed: {out.read_text()}")

        seen = wait_for("stop: Ctrl-C")
        assert "site edge1" in seen and "site edge2" in seen, seen  # sites by default
        pids = subprocess.run(
            ["pgrep", "-P", str(up.pid), "-f", "node start --name edge1"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        assert pids, seen
        os.kill(int(pids[0]), signal.SIGKILL)
        wait_for("node edge1 exited with -9; restarting in 1 s")
        wait_for("node edge1: restarting")
        url = re.search(r"FADES_CONTROLLER=(\S+)", seen).group(1)  # type: ignore[union-attr]
        token = re.search(r"FADES_TOKEN=(\S+)", seen).group(1)  # type: ignore[union-attr]
        task = fades(
            "task",
            "submit",
            str(EXAMPLES / "tasks" / "mean_core.yaml"),
            "--wait",
            "--controller",
            url,
            "--token",
            token,
            home=tmp_path / "client",
        )
        assert task.returncode == 0, task
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=120) == 0, out.read_text()
        assert "stopped" in out.read_text()
    finally:
        if up.poll() is None:
            up.kill()


def test_keys_list_shows_trusted_and_signing_keys(tmp_path: Path) -> None:
    home = tmp_path / "h"
    assert fades("keys", "generate", "--home", str(home), home=home).returncode == 0
    (home / "trusted" / "bad.pub").write_text("not a key")
    proc = fades("keys", "list", "--home", str(home), home=home)
    assert proc.returncode == 0, proc
    lines = proc.stdout.splitlines()
    assert any(line.startswith("trusted") and "unreadable" in line for line in lines), lines
    assert sum(line.startswith("signing") for line in lines) == 1, lines
    assert sum(line.startswith("trusted") for line in lines) == 2, lines


def test_task_list_get_and_cancel_read_the_node_folder(home: Path) -> None:
    example = str(EXAMPLES / "tasks" / "minmaxmean.yaml")
    ran = json.loads(ok(fades("task", "run", example, "--json", home=home)))
    listed = json.loads(ok(fades("task", "list", "--json", home=home)))
    assert ran["id"] in [row["id"] for row in listed]
    got = json.loads(ok(fades("task", "get", ran["id"], "--json", home=home)))
    assert got["status"] == "done" and got["result"] == ran["result"]
    missing = fades("task", "get", "no-such-task", home=home)
    assert missing.returncode == 2 and "no-such-task" in missing.stderr


def test_task_cancel_from_another_process_ends_a_running_persistent_task(
    home: Path, tmp_path: Path
) -> None:
    src = tmp_path / "ticker.py"
    src.write_text("N = 0\ndef main(data, params):\n    global N\n    N += 1\n    return N\n")
    ok(fades("fn", "build", str(src), home=home))
    t = tmp_path / "ticker.yaml"
    t.write_text(
        "credentials: {tenant: a, task_id: ticker-1}\ndata: [{name: t, select: {last: 5}}]\n"
        "function: {artifact: ticker, mode: persistent, period_s: 0.2, memory_mib: 32}\n"
    )
    env = dict(os.environ, FADES_HOME=str(home))
    runner = subprocess.Popen(
        [FADES, "task", "run", str(t), "--json", "--timeout", "600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while True:  # until the other process has the task running
            rows = json.loads(ok(fades("task", "list", "--json", home=home)))
            if any(r["id"] == "ticker-1" and r["status"] == "running" for r in rows):
                break
            assert runner.poll() is None, runner.communicate()
            assert time.monotonic() < deadline, rows
            time.sleep(0.2)
        assert "ticker-1" in ok(fades("task", "cancel", "ticker-1", home=home))
        out, err = runner.communicate(timeout=120)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert runner.returncode == 1, err
    rec = json.loads(out)
    assert (rec["status"], rec["error_kind"]) == ("failed", "TaskCancelled")


def test_fn_list_json_gives_full_digests_and_fn_rm_removes_every_version(
    home: Path, tmp_path: Path
) -> None:
    src = tmp_path / "short_lived.py"
    src.write_text('"""Here for a moment."""\ndef main(data, params):\n    return 1\n')
    ok(fades("fn", "build", str(src), home=home))
    src.write_text('"""Here for a moment, v2."""\ndef main(data, params):\n    return 2\n')
    ok(fades("fn", "build", str(src), home=home))
    rows = json.loads(ok(fades("fn", "list", "--json", home=home)))
    (row,) = [r for r in rows if r["name"] == "short_lived"]
    assert row["digest"].startswith("sha256:") and len(row["digest"]) == len("sha256:") + 64
    assert row["description"] == "Here for a moment, v2."
    out = ok(fades("fn", "rm", "short_lived", home=home))
    assert out.count("removed short_lived") == 2  # both versions
    rows = json.loads(ok(fades("fn", "list", "--json", home=home)))
    assert "short_lived" not in [r["name"] for r in rows]
    again = fades("fn", "rm", "short_lived", home=home)
    assert again.returncode == 2 and "short_lived" in again.stderr


def test_a_crashing_task_keeps_its_traceback_and_output_in_the_node_folder(
    home: Path, tmp_path: Path
) -> None:
    src = tmp_path / "noisy_crash.py"
    src.write_text(
        "def main(data, params):\n    print('looking for room9')\n    return data['room9']\n"
    )
    ok(fades("fn", "build", str(src), home=home))
    t = tmp_path / "noisy.yaml"
    t.write_text(
        "credentials: {tenant: a}\ndata: [{name: t, select: {last: 5}}]\n"
        "function: {artifact: noisy_crash, memory_mib: 32}\n"
    )
    proc = fades("task", "run", str(t), "--json", home=home)
    assert proc.returncode == 1
    rec = json.loads(proc.stdout)
    assert 'noisy_crash.py", line 3, in main' in rec["traceback"]
    assert rec["logs"] == "looking for room9\n"
    assert rec["digest"].startswith("sha256:")
    logs = ok(fades("task", "logs", rec["id"], home=home))
    assert "looking for room9" in logs and "line 3" in logs
