"""The CLI on a node folder holding hostile artifact files: it keeps working.

Runs ``python -m fades`` as a subprocess, as an operator does. Only the CLI and raw bytes are
used here, so these tests run (and fail) against the code from before the fix too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from fades.functions.keys import SigningKey

from .forge import forged, raw_artifact

GOOD = "def main(data, params):\n    return 1\n"
EVIL = b"def main(data, params):\n    return 666\n"


def fades(*args: str, home: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FADES_HOME=str(home), COLUMNS="200")
    env.pop("FORCE_COLOR", None)
    return subprocess.run(
        [sys.executable, "-m", "fades", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def one_error_line(proc: subprocess.CompletedProcess[str], kind: str) -> str:
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"error ({kind})" in lines[0], proc.stderr
    return lines[0]


@pytest.fixture
def node(prepare_home: Callable[..., Path]) -> Path:
    return prepare_home(functions={"one": GOOD}, readings=True)


def run_one(home: Path, make_task: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    task = home.parent / "task.yaml"
    task.write_text(yaml.safe_dump(make_task("one", memory_mib=64)))
    proc = fades("task", "run", str(task), "--json", home=home)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    rec: dict[str, Any] = json.loads(proc.stdout)
    return rec


def drop(home: Path, raw: bytes, stem: str) -> Path:
    path = home / "artifacts" / f"{stem}.fart"
    path.write_bytes(raw)
    return path


def test_an_unsigned_later_file_hijacks_neither_a_name_nor_the_runtime(
    node: Path, make_task: Callable[..., dict[str, Any]]
) -> None:
    later = {"created": 4_000_000_000, "created_ns": 4_000_000_000 * 10**9}
    drop(node, forged(None, EVIL, name="one", **later), "a" * 64)
    runtime = forged(
        None, b"\0asm\x0d\0\x01\0", name="fades-python-runtime", kind="runtime", **later
    )
    drop(node, runtime, "b" * 64)
    rec = run_one(node, make_task)
    assert rec["status"] == "done" and rec["result"] == 1, rec
    listed = fades("fn", "list", home=node)
    assert listed.returncode == 0 and "one" in listed.stdout


MALFORMED = {
    "json-string": lambda k: raw_artifact(b'"name kind abi payload_sha256"', EVIL, k),
    "deep": lambda k: raw_artifact(b"[" * 100_000 + b"]" * 100_000, EVIL, k),
    "created-not-a-time": lambda k: forged(k, EVIL, name="one", created="yesterday"),
    "garbage": lambda k: os.urandom(2048),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_file_is_reported_and_every_command_keeps_working(
    case: str,
    node: Path,
    signing_key: SigningKey,
    make_task: Callable[..., dict[str, Any]],
) -> None:
    bad = drop(node, MALFORMED[case](signing_key), "c" * 64)
    listed = fades("fn", "list", home=node)
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stderr
    assert "one" in listed.stdout
    assert not bad.exists() and bad.name in listed.stderr and "quarantined" in listed.stderr
    rec = run_one(node, make_task)
    assert rec["status"] == "done" and rec["result"] == 1, rec
    again = fades("fn", "list", home=node)  # reported once; the folder is clean now
    assert again.returncode == 0 and "quarantined" not in again.stderr


@pytest.mark.parametrize(
    ("payload", "fields", "message"),
    [
        (EVIL, {"created": "yesterday"}, "'created' is 'yesterday'"),
        (EVIL, {"name": "../one"}, "function name is"),
        (EVIL, {"name": "one two"}, "function name is"),
        (b"\0asm\x01\0\0\0", {}, "payload is WebAssembly"),
        (b"\xff\xfe", {}, "not UTF-8"),
        (b"import os\n", {}, "defines no top-level function 'main'"),
        (EVIL, {"kind": "core", "abi": "fades-core/1"}, "payload is not WebAssembly"),
    ],
)
def test_fn_add_refuses_a_signed_artifact_that_breaks_a_rule(
    payload: bytes,
    fields: dict[str, Any],
    message: str,
    node: Path,
    signing_key: SigningKey,
) -> None:
    art = node.parent / "bad.fart"
    art.write_bytes(forged(signing_key, payload, **{"name": "one", **fields}))
    line = one_error_line(fades("fn", "add", str(art), home=node), "ArtifactRejected")
    assert message in line
    assert len(list((node / "artifacts").glob("*.fart"))) == 2  # the runtime and 'one'
    listed = fades("fn", "list", home=node)
    assert listed.returncode == 0 and "one" in listed.stdout and not listed.stderr
