"""A bad command line is one ``error (UsageError): ...`` line naming the command, what to fix
and its help, with exit status 2: never typer's boxed usage panel (run as a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FADES = str(Path(sys.executable).with_name("fades"))


def fades(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, FADES_HOME=str(tmp_path / "home"), COLUMNS="80", **env)
    for name in ("FORCE_COLOR", "FADES_CONTROLLER", "FADES_TOKEN", "FADES_DEBUG"):
        if name not in env:
            full.pop(name, None)
    return subprocess.run(
        [FADES, *args], capture_output=True, text=True, timeout=120, env=full, check=False
    )


def one_usage_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error (UsageError): "), proc.stderr
    for framing in ("╭", "│", "Usage:", "Traceback", "Try '"):
        assert framing not in proc.stderr, proc.stderr
    return lines[0]


OFFLINE = {"FADES_CONTROLLER": "http://127.0.0.1:9", "FADES_TOKEN": "t"}

# argv -> (environment, the parts the one line must hold)
CASES: dict[str, tuple[list[str], dict[str, str], list[str]]] = {
    "hub": (
        ["up", "--hub", "2"],
        {},
        ["fades up: --hub:", "1, 3 or 5", "not 2", "see 'fades up --help'"],
    ),
    "controllers": (
        ["up", "--controllers", "0"],
        {},
        ["fades up: --controllers must be at least 1 (got '0')", "see 'fades up --help'"],
    ),
    "nodes-not-int": (
        ["up", "--nodes", "abc"],
        {},
        ["fades up: --nodes must be a valid integer (got 'abc')"],
    ),
    "nodes-too-many": (["up", "--nodes", "99"], {}, ["--nodes must be at most 32 (got '99')"]),
    "args-not-json": (
        ["devices", "command", "edge1/fan-room1", "on", "--args", "notjson"],
        OFFLINE,
        ["fades devices command: --args is not JSON", "see 'fades devices command --help'"],
    ),
    "typo-command": (
        ["fn", "tset", "x.py"],
        {},
        ["fades fn: no such command 'tset' (did you mean 'test'?)", "see 'fades fn --help'"],
    ),
    "typo-root-command": (["tsak"], {}, ["fades: no such command 'tsak'"]),
    "unknown-option": (
        ["fn", "test", "x.py", "--memory", "64"],
        {},
        ["fades fn test: no such option: --memory", "--memory-mib"],
    ),
    "root-option": (["--bogus"], {}, ["fades: no such option: --bogus"]),
    "missing-argument": (
        ["task", "run"],
        {},
        ["fades task run: missing argument TASK_FILE", "see 'fades task run --help'"],
    ),
    "missing-controller": (
        ["devices", "list"],
        {},
        ["fades devices list: missing option --controller (or set FADES_CONTROLLER)"],
    ),
    "nodes-without-controller": (
        ["nodes"],
        {},
        ["fades nodes: pass --controller URL or set FADES_CONTROLLER"],
    ),
    "negative-days": (
        ["up", "--days", "-1"],
        {},
        ["fades up: --days must be more than 0 days, not -1"],
    ),
    "negative-duration": (
        ["up", "--duration", "-5"],
        {},
        ["fades up: --duration must be more than 0 seconds, not -5"],
    ),
    "limit-zero": (
        ["task", "list", "--limit", "0"],
        OFFLINE,
        ["fades task list: --limit must be at least 1 (got '0')"],
    ),
    "data-days": (
        ["data", "generate", "--days", "-1"],
        {},
        ["fades data generate: --days must be more than 0, not -1"],
    ),
    "data-rate": (["data", "generate", "--rate", "0"], {}, ["--rate must be more than 0, not 0"]),
    "bad-param": (["fn", "test", "x.py", "-p", "nokv"], {}, ["--param: 'nokv' is not KEY=VALUE"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_usage_error_is_one_line_naming_the_command_and_the_fix(
    case: str, tmp_path: Path
) -> None:
    argv, env, parts = CASES[case]
    line = one_usage_line(fades(*argv, tmp_path=tmp_path, **env))
    for part in parts:
        assert part in line, line


def test_a_usage_error_shows_the_traceback_with_debug(tmp_path: Path) -> None:
    proc = fades("--debug", "up", "--hub", "2", tmp_path=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error (UsageError): fades up: --hub:"), proc.stderr
    assert "Traceback" in proc.stderr


def test_help_and_a_group_without_a_command_still_print_the_help(tmp_path: Path) -> None:
    helped = fades("up", "--help", tmp_path=tmp_path)
    assert helped.returncode == 0 and "--controllers" in helped.stdout, helped
    bare = fades("fn", tmp_path=tmp_path)  # no_args_is_help: the group's help, as before
    assert "UsageError" not in bare.stderr and "build" in bare.stdout + bare.stderr, bare
    version = fades("--version", tmp_path=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("fades "), version


def test_a_good_command_line_after_a_bad_one_runs(tmp_path: Path) -> None:
    one_usage_line(fades("keys", "generat", tmp_path=tmp_path))
    good = fades("keys", "generate", tmp_path=tmp_path)
    assert good.returncode == 0 and "now trusts key" in good.stdout, good
