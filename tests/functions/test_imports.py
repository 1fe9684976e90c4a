"""``fades fn build`` refuses a function that imports a module the sandbox does not have."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from fades.errors import FunctionSourceError
from fades.functions.build import build_python
from fades.functions.modules import AVAILABLE, SDK, STATE_SDK, UNAVAILABLE, unavailable_reason

from .test_build import fades, keyed_home  # noqa: F401  (a fixture)

MAIN = "def main(data, params):\n    return 1\n"

REFUSED: dict[str, tuple[str, str, int, str]] = {
    # case: (source, module, line, why)
    "import": ("x = 1\nimport socket\n", "socket", 2, "no network"),
    "import-as": ("import json, subprocess as sp\n", "subprocess", 1, "no processes"),
    "from": ("\n\nfrom threading import Thread\n", "threading", 3, "no threads"),
    "from-submodule": ("from urllib.request import urlopen\n", "urllib.request", 1, "network"),
    "dotted": ("import os.path\n", "os.path", 1, "no file system"),
    "dunder": ("def f():\n    return __import__('pathlib')\n", "pathlib", 2, "file system"),
    "importlib": (
        "import importlib\nm = importlib.import_module('asyncio')\n",
        "asyncio",
        2,
        "network",
    ),
    "import_module": (
        "from importlib import import_module\n\nimport_module('ssl')\n",
        "ssl",
        3,
        "network",
    ),
    "in-function": ("def g():\n    import ctypes\n", "ctypes", 2, "WASI"),
    "third-party": ("import numpy as np\n", "numpy", 1, "third-party"),
    "not-bundled": ("import email.mime.text\n", "email.mime.text", 1, "not bundled"),
    "sibling": ("import urllib.error\n", "urllib.error", 1, "not bundled"),
    "host-fades": ("from fades.guest.fades_sdk import decode\n", "fades.guest.fades_sdk", 1, SDK),
    "relative": ("from . import helper\n", ".", 1, "one file"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_an_unavailable_import_is_one_line_naming_module_line_and_why(
    case: str, tmp_path: Path
) -> None:
    source, module, line, why = REFUSED[case]
    src = tmp_path / "f.py"
    src.write_text(source + MAIN)
    with pytest.raises(FunctionSourceError) as err:
        build_python(src, key=None)
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 300, msg
    assert msg.startswith(f"{src}:{line}: imports {module!r}"), msg
    assert why in msg, msg
    assert err.value.context == {"line": line, "module": module}


def test_every_available_module_and_the_sdk_build(tmp_path: Path) -> None:
    lines = [f"import {m}" for m in AVAILABLE if m != "__future__"]
    src = tmp_path / "f.py"
    src.write_text(
        "from __future__ import annotations\n"
        + "\n".join(lines)
        + "\nfrom collections import abc, Counter\nfrom statistics import mean, median\n"
        "from datetime import datetime, timezone\nfrom fades_sdk import decode\n"
        "import urllib\nimport json.decoder\nm = __import__('heapq')\n"
        "import importlib\nz = importlib.import_module('zoneinfo')\n" + MAIN
    )
    art = build_python(src, key=None)
    assert art.name == "f"


def test_optional_and_type_checking_imports_are_not_refused(tmp_path: Path) -> None:
    src = tmp_path / "f.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "try:\n    import numpy\nexcept ImportError:\n    numpy = None\n"
        "try:\n    import socket\nexcept (ModuleNotFoundError, OSError):\n    socket = None\n"
        "if TYPE_CHECKING:\n    from pathlib import Path\n"
        "name = 'os'\nmod = __import__(name)  # computed at run time: cannot be checked\n" + MAIN
    )
    build_python(src, key=None)
    # ... but a try that does not catch a failed import does not make an import optional
    src.write_text("try:\n    import socket\nexcept KeyError:\n    pass\n" + MAIN)
    with pytest.raises(FunctionSourceError, match=r":2: imports 'socket'"):
        build_python(src, key=None)


def test_a_syntax_error_is_reported_with_its_line_before_imports(tmp_path: Path) -> None:
    src = tmp_path / "f.py"
    src.write_text("import socket\n\ndef main(data, params)\n    return 1\n")
    with pytest.raises(FunctionSourceError, match=r":3: syntax error"):
        build_python(src, key=None)


def test_the_lists_are_consistent() -> None:
    assert list(AVAILABLE) == sorted(set(AVAILABLE)), "AVAILABLE is sorted, without repeats"
    assert isinstance(AVAILABLE, tuple) and all(isinstance(m, str) for m in AVAILABLE)
    assert SDK in AVAILABLE
    assert not set(AVAILABLE) & set(UNAVAILABLE)
    for m in AVAILABLE:
        assert unavailable_reason(m) is None, m
        top = m.split(".")[0]
        assert top in (SDK, STATE_SDK) or top in sys.stdlib_module_names, m
    for m, why in UNAVAILABLE.items():
        assert unavailable_reason(m) == why
        assert unavailable_reason(m + ".x") == why
    for m in ("statistics", "datetime", "heapq", "decimal", "fractions", "csv", "zoneinfo"):
        assert m in AVAILABLE
    for m in ("socket", "ssl", "select", "asyncio", "subprocess", "multiprocessing", "os"):
        assert m in UNAVAILABLE


def test_fn_build_prints_the_refused_import_as_one_line(
    keyed_home: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    src = tmp_path / "net.py"
    src.write_text('"""Fetches."""\nimport socket\n' + MAIN)
    proc = fades("fn", "build", str(src), home=keyed_home)
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "error (FunctionSourceError)" in lines[0], proc.stderr
    assert re.search(r"net\.py:2: imports 'socket'.*no network", lines[0]), lines[0]
    assert not list((keyed_home / "artifacts").glob("*.fart"))
