"""Ctrl-C while the ``fades`` command is still importing its modules ends it with one line
and exit status 130, as it does once the command runs: no traceback. Real subprocesses; the
interrupt is sent once the interpreter reports (``-X importtime``) that it is importing the
command line's modules."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")
#: the console script's body (the ``fades`` entry point in pyproject.toml)
SCRIPT = "import sys; from fades.__main__ import main; sys.exit(main())"


@pytest.mark.parametrize(
    ("argv", "imported"),
    [
        (["-m", "fades", "--help"], r"\|\s*fades$"),
        (["-c", SCRIPT, "--help"], r"\|\s*fades\.__main__$"),
    ],
    ids=["python -m fades", "console script"],
)
def test_ctrl_c_while_importing_exits_130_with_one_line(argv: list[str], imported: str) -> None:
    env = {**os.environ, "PYTHONPATH": SRC, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    seen: list[str] = []
    # one import more after the marker: the command line's own imports have begun (before
    # them, a few bytecodes of runpy or of the script lie outside anything fades can catch)
    wanted = 2
    for line in proc.stderr:  # import-time lines, until the package is imported
        if seen or re.search(imported, line.rstrip()):
            seen.append(line)
        if len(seen) >= wanted:
            break
    else:
        pytest.fail("the import of fades was never reported")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    lines = [ln for ln in err.splitlines() if not ln.startswith("import time:")]
    assert "Traceback" not in err, err[-2000:]
    assert proc.returncode == 130, (proc.returncode, lines, out[-500:])
    assert lines == ["interrupted"], lines
