"""``fades fn test FILE.py``: a function runs in a real sandbox on sample data, like a script.

Runs the CLI as a subprocess, as a function author does: no key, no install, no task file.
The launcher registers the command if ``fades.cli.fn`` does not (yet) do so itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_LAUNCH = (
    "from fades.cli import app\n"
    "from fades.cli.fn import fn_app\n"
    "from fades.cli.fntest import test\n"
    "if not any(c.name == 'test' for c in fn_app.registered_commands):\n"
    "    fn_app.command('test')(test)\n"
    "app(prog_name='fades')\n"
)

GOOD = '''"""Mean value of the selection, scaled."""


def main(data, params):
    ds = data["readings"]
    print("rows:", len(ds.values))
    return {"mean": sum(ds.values) / len(ds.values), "scale": params["scale"]}
'''

KEYERROR = """def main(data, params):
    print("about to look up a key")
    return {}["nope"]
"""

SOCKET = """import math
import socket


def main(data, params):
    return 1
"""


def fn_test(tmp: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FADES_HOME=str(tmp / "no-home"), COLUMNS="200")
    env.pop("FORCE_COLOR", None)
    return subprocess.run(
        [sys.executable, "-c", _LAUNCH, "fn", "test", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def source(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def test_a_good_function_prints_its_result_and_logs(tmp_path: Path) -> None:
    fn = source(tmp_path, "good.py", GOOD)
    proc = fn_test(
        tmp_path, str(fn), "--param", "scale=3", "--location", "room2",
        "--sensor-type", "co2", "--last-seconds", "3600",
    )  # fmt: skip
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert ": done" in proc.stdout
    assert '"scale": 3' in proc.stdout  # the param arrived as JSON (an int)
    assert "rows: 60" in proc.stdout  # one co2 sensor, one reading a minute, one hour
    assert not (tmp_path / "no-home").exists()  # nothing installed, no node folder made


def test_a_failing_function_shows_file_line_and_print_output(tmp_path: Path) -> None:
    fn = source(tmp_path, "broken.py", KEYERROR)
    proc = fn_test(tmp_path, str(fn))
    assert proc.returncode == 1, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    out = proc.stdout
    assert ": failed" in out
    assert "KeyError: 'nope'" in out
    assert f'File "{fn}", line 3, in main' in out
    assert 'return {}["nope"]' in out  # the source line, as Python shows a script's
    assert "app.py" not in out  # the runtime's own frames are not the user's
    assert "about to look up a key" in out


def test_an_import_the_sandbox_lacks_is_refused_with_its_line(tmp_path: Path) -> None:
    fn = source(tmp_path, "net.py", SOCKET)
    proc = fn_test(tmp_path, str(fn))
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "FunctionSourceError" in lines[0] and f"{fn}:2:" in lines[0]
    assert "socket" in lines[0]


def test_csv_sample_data_and_json_params(tmp_path: Path) -> None:
    csv = tmp_path / "readings.csv"
    csv.write_text(
        "ts,value,sensor_type,unit,location,device\n"
        "2026-01-01T00:00:00,20.0,temperature,C,lab,t1\n"
        "2026-01-01T00:01:00,22.0,temperature,C,lab,t1\n"
        "2026-01-01T00:02:00,99.0,humidity,%,lab,h1\n"
    )
    fn = source(tmp_path, "good.py", GOOD)
    proc = fn_test(
        tmp_path, str(fn), "--csv", str(csv), "--sensor-type", "temperature",
        "--param", 'scale={"k": [1, 2]}', "--json",
    )  # fmt: skip
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    outcome = json.loads(proc.stdout)
    assert outcome["status"] == "done"
    assert outcome["result"] == {"mean": 21.0, "scale": {"k": [1, 2]}}
    assert "rows: 2" in outcome["logs"]


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    fn = source(tmp_path, "good.py", GOOD)
    proc = fn_test(tmp_path, str(fn), "--param", "no-equals-sign")
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "KEY=VALUE" in proc.stderr
    proc = fn_test(tmp_path, str(fn), "--csv", str(tmp_path / "missing.csv"))
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "missing.csv" in proc.stderr


def test_a_nodes_store_an_empty_selection_and_the_time_budget(tmp_path: Path) -> None:
    home = tmp_path / "node"
    gen = subprocess.run(
        [sys.executable, "-m", "fades", "data", "generate", "--days", "0.05", "--home", str(home)],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    fn = source(tmp_path, "good.py", GOOD)
    proc = fn_test(tmp_path, str(fn), "--home", str(home), "-s", "co2", "-p", "scale=1", "--json")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert json.loads(proc.stdout)["status"] == "done"
    # an empty selection says so (exit 1), and the node's store was only read
    proc = fn_test(tmp_path, str(fn), "--home", str(home), "-l", "nowhere")
    assert proc.returncode == 1, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "NoData" in proc.stdout and "no rows matched" in proc.stdout
    assert not (home / "tasks.db").exists() and not (home / "artifacts").exists()
    loop = source(tmp_path, "loop.py", "def main(data, params):\n    while True:\n        pass\n")
    proc = fn_test(tmp_path, str(loop), "--days", "0.01", "--time-budget-ms", "300", "--json")
    assert proc.returncode == 1, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert json.loads(proc.stdout)["error_kind"] == "TimeLimitExceeded"


def test_the_cli_defaults_are_the_nodes_and_the_runner_loads_lazily() -> None:
    from fades.cli import fntest
    from fades.functions import trial
    from fades.task import FunctionSpec

    spec = FunctionSpec(artifact="f")
    assert fntest.DEFAULT_MEMORY_MIB == trial.DEFAULT_MEMORY_MIB == spec.memory_mib
    assert fntest.DEFAULT_TIME_BUDGET_MS == trial.DEFAULT_TIME_BUDGET_MS == spec.time_budget_ms
    # the command's module loads the runner only when it runs (fades --help stays light)
    code = "import sys, fades.cli.fntest; print('fades.functions.trial' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]
