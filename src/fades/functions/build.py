"""Turn source into artifacts: Python functions, core WebAssembly modules, the Python runtime.

A Python function's artifact carries only its source (a few KiB). The Python interpreter
travels once, as the signed *runtime* artifact built here with componentize-py; a node that
holds it can run any Python function it later receives.
"""

from __future__ import annotations

import ast
import hashlib
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

import wasmtime

from fades import paths
from fades.errors import BuildError
from fades.functions.artifact import Artifact, create
from fades.functions.keys import SigningKey

CORE_EXPORTS = ("memory", "fades_alloc", "fades_run")
CORE_IMPORTS = {"result_f64", "result_json", "log"}
_GUEST_FILES = ("app.py", "fades_sdk.py", "wit/runtime.wit")


def build_python(
    path: str | Path,
    *,
    key: SigningKey | None,
    name: str | None = None,
    entry: str = "main",
    description: str = "",
) -> Artifact:
    """Check a Python function's source and wrap it in a signed artifact.

    Raises:
        BuildError: the source does not parse or defines no ``entry`` function.
    """
    p = Path(path)
    try:
        source = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise BuildError(f"cannot read {p}: {exc.strerror}") from None
    try:
        tree = ast.parse(source, filename=str(p))
    except SyntaxError as exc:
        raise BuildError(f"{p}:{exc.lineno}: syntax error: {exc.msg}") from None
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    if entry not in defined:
        raise BuildError(
            f"{p} defines no top-level function {entry!r} "
            f"(found: {', '.join(sorted(defined)) or 'none'})"
        )
    doc = ast.get_docstring(tree) or ""
    return create(
        "python",
        name or p.stem,
        source.encode(),
        key=key,
        entry=entry,
        description=description or doc.strip().splitlines()[0] if doc.strip() else description,
    )


def wasm_bytes(path: str | Path) -> bytes:
    """Read a ``.wasm`` file, or a ``.wat`` text module compiled to binary."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise BuildError(f"cannot read {p}: {exc.strerror}") from None
    if data[:4] == b"\0asm":
        return data
    try:
        return bytes(wasmtime.wat2wasm(data.decode()))
    except (wasmtime.WasmtimeError, UnicodeDecodeError) as exc:
        raise BuildError(f"{p} is neither a wasm binary nor valid WAT: {exc}") from None


def check_core_abi(wasm: bytes, *, where: str = "module") -> None:
    """Refuse modules that do not speak fades-core/1 or import anything else."""
    try:
        module = wasmtime.Module(wasmtime.Engine(), wasm)
    except wasmtime.WasmtimeError as exc:
        raise BuildError(f"{where} is not a valid WebAssembly module: {exc}") from None
    exports = {e.name for e in module.exports}
    missing = [e for e in CORE_EXPORTS if e not in exports]
    if missing:
        raise BuildError(
            f"{where} lacks the export(s) {', '.join(missing)} required by fades-core/1"
        )
    for imp in module.imports:
        if imp.module != "fades" or imp.name not in CORE_IMPORTS:
            raise BuildError(
                f"{where} imports {imp.module}.{imp.name}; core modules may import only "
                f"fades.{{{', '.join(sorted(CORE_IMPORTS))}}}"
            )


def build_core(
    path: str | Path, *, key: SigningKey | None, name: str | None = None, description: str = ""
) -> Artifact:
    """Wrap a core module (``.wasm`` or ``.wat``) in a signed artifact."""
    p = Path(path)
    wasm = wasm_bytes(p)
    check_core_abi(wasm, where=str(p))
    return create("core", name or p.stem, wasm, key=key, description=description)


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
