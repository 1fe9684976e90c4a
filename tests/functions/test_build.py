"""``fades fn build`` never tracebacks: every bad source is one line naming the problem."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fades.errors import BuildError, FunctionSourceError
from fades.functions.build import build_core, build_function, build_python
from fades.functions.keys import SigningKey, TrustStore
from fades.functions.validate import MAX_PAYLOAD

from .forge import CORE_WAT

MAIN = "\ndef main(data, params):\n    return 1\n"
SOURCES: dict[str, tuple[bytes, str]] = {
    "parens": (
        b"x = " + b"(" * 100_000 + b")" * 100_000 + MAIN.encode(),
        r":1: syntax error: too many nested parentheses",
    ),
    "plus-chain": (
        b"x = " + b"+".join([b"1"] * 100_000) + MAIN.encode(),
        r"nested too deeply for the Python parser",
    ),
    "unary-chain": (
        b"x = " + b"-" * 100_000 + b"1" + MAIN.encode(),
        r"nested too deeply for the Python parser",
    ),
    "lambdas": (
        b"x = " + b"lambda: " * 50_000 + b"1" + MAIN.encode(),
        r"nested too deeply|syntax error",
    ),
    "syntax": (b"x = 1\ny = 2\ndef main(:\n", r":3: syntax error"),
    "binary": (os.urandom(64) + b"\xff", r"not UTF-8 text \(byte 0x"),
    "nul": (b"x = 1\n\0\n" + MAIN.encode(), r":2: a NUL byte"),
    "no-main": (
        b"def helper():\n    pass\n",
        r"defines no top-level function 'main' \(found: helper\)",
    ),
}


@pytest.mark.parametrize("case", list(SOURCES))
def test_a_bad_source_is_one_build_error_naming_the_problem(case: str, tmp_path: Path) -> None:
    data, message = SOURCES[case]
    src = tmp_path / "f.py"
    src.write_bytes(data)
    with pytest.raises(BuildError, match=message) as err:
        build_python(src, key=None)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400


def test_a_huge_source_is_refused_before_it_is_read(tmp_path: Path) -> None:
    src = tmp_path / "huge.py"
    with open(src, "wb") as f:
        f.truncate(MAX_PAYLOAD["python"] + 1)
    with pytest.raises(FunctionSourceError, match=rf"is at most {MAX_PAYLOAD['python']} bytes"):
        build_python(src, key=None)


def test_a_huge_core_module_is_refused_before_it_is_read(tmp_path: Path) -> None:
    src = tmp_path / "huge.wasm"
    with open(src, "wb") as f:
        f.truncate(MAX_PAYLOAD["core"] + 1)
    with pytest.raises(FunctionSourceError, match=r"a core module is at most"):
        build_core(src, key=None)


def test_a_directory_is_not_a_source(tmp_path: Path) -> None:
    (tmp_path / "d.py").mkdir()
    with pytest.raises(FunctionSourceError, match="not a regular file"):
        build_python(tmp_path / "d.py", key=None)


@pytest.mark.parametrize("stem", ["my function", "Mean", "f*", "\u0430qi"])
def test_a_file_name_that_is_not_a_function_name_asks_for_name(stem: str, tmp_path: Path) -> None:
    src = tmp_path / f"{stem}.py"
    src.write_text(MAIN)
    with pytest.raises(BuildError, match=r"function name is .* \(choose one with --name\)"):
        build_python(src, key=None)
    assert build_python(src, key=None, name="ok").name == "ok"


def test_a_bad_explicit_name_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "f.wat"
    src.write_text(CORE_WAT)
    with pytest.raises(BuildError, match=r"'a/b' is not allowed"):
        build_core(src, key=None, name="a/b")


def test_a_docstring_with_control_characters_makes_a_clean_description(
    tmp_path: Path, signing_key: SigningKey
) -> None:
    src = tmp_path / "f.py"
    src.write_text('"""Mean \x1b[31mred\u202e """' + MAIN)
    art = build_function(src, key=signing_key)
    assert art.manifest["description"] == "Mean [31mred"
    art.verify(TrustStore([signing_key.public]))


# --- through the CLI --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keyed_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("build") / "node"
    proc = fades("keys", "generate", home=home)
    assert proc.returncode == 0, proc.stderr
    return home


def fades(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FADES_HOME=str(home), COLUMNS="200")
    env.pop("FORCE_COLOR", None)
    return subprocess.run(
        [sys.executable, "-m", "fades", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )


@pytest.mark.parametrize("case", ["parens", "plus-chain", "unary-chain", "syntax", "binary"])
def test_fn_build_prints_one_line_and_exits_2(case: str, keyed_home: Path, tmp_path: Path) -> None:
    data, message = SOURCES[case]
    src = tmp_path / "f.py"
    src.write_bytes(data)
    proc = fades("fn", "build", str(src), home=keyed_home)
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "error (FunctionSourceError)" in lines[0], proc.stderr
    assert re.search(message, lines[0]), lines[0]
    assert not list((keyed_home / "artifacts").glob("*.fart"))
