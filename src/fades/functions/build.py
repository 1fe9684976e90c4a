"""Turn source into artifacts: Python functions, core WebAssembly modules, the Python runtime.

A Python function's artifact carries only its source (a few KiB). The Python interpreter
travels once, as the signed *runtime* artifact built here with componentize-py; a node that
holds it can run any Python function it later receives.
"""

from __future__ import annotations

import ast
import hashlib
import stat
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

import wasmtime

from fades import paths
from fades.errors import ArtifactRejected, BuildError, FunctionSourceError
from fades.functions.artifact import Artifact, create
from fades.functions.keys import SigningKey
from fades.functions.validate import (
    CORE_EXPORTS,
    CORE_IMPORTS,
    ENTRY_RE,
    MAX_PAYLOAD,
    MAX_TEXT,
    check_core_module,
    check_name,
    check_python_source,
    clean_text,
)

__all__ = [
    "CORE_EXPORTS",
    "CORE_IMPORTS",
    "build_core",
    "build_function",
    "build_python",
    "build_runtime",
    "check_core_abi",
    "wasm_bytes",
]

_GUEST_FILES = ("app.py", "fades_sdk.py", "wit/runtime.wit")


def _read_bounded(p: Path, limit: int, what: str) -> bytes:
    """The bytes of ``p``, refusing (before reading) a file that is not regular or too large."""
    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):
            raise FunctionSourceError(f"cannot build {p}: not a regular file")
        if st.st_size > limit:
            raise FunctionSourceError(
                f"{p} has {st.st_size} bytes; {what} is at most {limit} bytes"
            )
        with p.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise FunctionSourceError(f"cannot read {p}: {exc.strerror}") from None
    if len(data) > limit:
        raise FunctionSourceError(f"{p} has more than {limit} bytes; {what} is at most {limit}")
    return data


def _name(name: str | None, p: Path) -> str:
    try:
        return check_name(name or p.stem, where=f"cannot build {p}", field="function name")
    except ArtifactRejected as exc:
        hint = "" if name else " (choose one with --name)"
        raise BuildError(f"{exc}{hint}", field="name") from None


def build_python(
    path: str | Path,
    *,
    key: SigningKey | None,
    name: str | None = None,
    entry: str = "main",
    description: str = "",
) -> Artifact:
    """Check a Python function's source and wrap it in a signed artifact.

    Never a traceback: a huge or binary file, a syntax error, or an expression nested too
    deeply for the parser is a :class:`FunctionSourceError` naming the problem and the line.

    Raises:
        BuildError: the source does not parse or defines no ``entry`` function.
    """
    p = Path(path)
    fn_name = _name(name, p)
    if not ENTRY_RE.match(entry):
        raise BuildError(f"entry {entry!r} is not a Python identifier", field="entry")
    raw = _read_bounded(p, MAX_PAYLOAD["python"], "a Python function's source")
    try:
        source = check_python_source(raw, entry=entry, where=str(p))
    except ArtifactRejected as exc:
        raise FunctionSourceError(exc.message, **exc.context) from None
    try:
        doc = ast.get_docstring(ast.parse(source)) or ""
    except (SyntaxError, RecursionError, MemoryError, ValueError):  # parsed once already
        doc = ""
    first = doc.strip().splitlines()[0] if doc.strip() else ""
    return create(
        "python",
        fn_name,
        raw,
        key=key,
        entry=entry,
        description=clean_text(description or first, MAX_TEXT),
    )


def wasm_bytes(path: str | Path) -> bytes:
    """Read a ``.wasm`` file, or a ``.wat`` text module compiled to binary."""
    p = Path(path)
    data = _read_bounded(p, MAX_PAYLOAD["core"], "a core module")
    if data[:4] == b"\0asm":
        return data
    try:
        return bytes(wasmtime.wat2wasm(data.decode()))
    except (wasmtime.WasmtimeError, UnicodeDecodeError) as exc:
        first = (str(exc).strip().splitlines() or ["invalid"])[0]
        raise BuildError(f"{p} is neither a wasm binary nor valid WAT: {first}") from None


def check_core_abi(wasm: bytes, *, where: str = "module") -> None:
    """Refuse modules that do not speak fades-core/1 or import anything else (a BuildError)."""
    try:
        check_core_module(wasm, where=where)
    except ArtifactRejected as exc:
        raise BuildError(exc.message, **exc.context) from None


def build_core(
    path: str | Path, *, key: SigningKey | None, name: str | None = None, description: str = ""
) -> Artifact:
    """Wrap a core module (``.wasm`` or ``.wat``) in a signed artifact."""
    p = Path(path)
    fn_name = _name(name, p)
    wasm = wasm_bytes(p)
    check_core_abi(wasm, where=str(p))
    return create("core", fn_name, wasm, key=key, description=clean_text(description))


def build_function(
    path: str | Path, *, key: SigningKey | None, name: str | None = None, entry: str = "main"
) -> Artifact:
    """Build by file type: ``.py`` is a Python function, ``.wat``/``.wasm`` a core module."""
    suffix = Path(path).suffix
    if suffix == ".py":
        return build_python(path, key=key, name=name, entry=entry)
    if suffix in (".wat", ".wasm"):
        return build_core(path, key=key, name=name)
    raise BuildError(f"cannot build {path}: expected a .py, .wat or .wasm file")


def runtime_source_hash() -> str:
    """Identifies the guest sources: a change in them means a new runtime build."""
    h = hashlib.sha256()
    guest = resources.files("fades.guest")
    for rel in _GUEST_FILES:
        h.update(rel.encode())
        h.update(guest.joinpath(rel).read_bytes())
    return h.hexdigest()[:16]


def runtime_wasm(*, progress: bool = False) -> bytes:
    """The Python runtime component, built with componentize-py once and cached.

    The build takes seconds; the cache lives in ``FADES_CACHE`` keyed by the guest sources.
    """
    out = paths.cache() / "runtime" / f"runtime-{runtime_source_hash()}.wasm"
    if out.exists():
        return out.read_bytes()
    out.parent.mkdir(parents=True, exist_ok=True)
    guest = resources.files("fades.guest")
    with tempfile.TemporaryDirectory(prefix="fades-runtime-") as tmp:
        t = Path(tmp)
        for rel in _GUEST_FILES:
            dst = t / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(guest.joinpath(rel).read_bytes())
        tmp_out = t / "runtime.wasm"
        # componentize-py's console script, run through this interpreter so that a venv's
        # copy is found even when its bin/ is not on PATH.
        launcher = "import sys, componentize_py; sys.exit(componentize_py.script())"
        cmd = [
            sys.executable, "-c", launcher,
            "-d", str(t / "wit"), "-w", "runtime",
            "componentize", "app", "-p", str(t), "-o", str(tmp_out),
        ]  # fmt: skip
        proc = subprocess.run(cmd, cwd=t, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not tmp_out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[:12]
            raise BuildError("componentize-py failed to build the runtime:\n" + "\n".join(tail))
        data = tmp_out.read_bytes()
    tmp_final = out.with_suffix(".tmp")
    tmp_final.write_bytes(data)
    tmp_final.replace(out)
    return data


def build_runtime(*, key: SigningKey | None) -> Artifact:
    """The signed runtime artifact that lets a node run Python functions."""
    from fades import __version__

    return create(
        "runtime",
        "fades-python-runtime",
        runtime_wasm(),
        key=key,
        entry="run",
        description=f"Python runtime for fades {__version__}",
        extra={"source_hash": runtime_source_hash()},
    )
