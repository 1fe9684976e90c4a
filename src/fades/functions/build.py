"""Turn source into artifacts: Python functions, core WebAssembly modules, the Python runtime.

A Python function's artifact carries only its source (a few KiB). The Python interpreter
travels once, as the signed *runtime* artifact built here with componentize-py; a node that
holds it can run any Python function it later receives.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import os
import stat
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

import wasmtime

from fades import paths
from fades.errors import ArtifactError, ArtifactRejected, BuildError, FunctionSourceError
from fades.functions.artifact import Artifact, create
from fades.functions.keys import SigningKey, TrustStore
from fades.functions.modules import AVAILABLE, check_imports
from fades.functions.store import FunctionStore, read_artifact
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

_GUEST_FILES = (
    "app.py",
    "fades_sdk.py",
    "fades_capture.py",
    "fades_state.py",
    "wit/runtime.wit",
)


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

    Never a traceback: a huge or binary file, a syntax error, an expression nested too
    deeply for the parser, or an import of a module the sandbox does not have
    (:mod:`fades.functions.modules`) is a :class:`FunctionSourceError` naming the problem
    and the line.

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
        tree = ast.parse(source)
    except (SyntaxError, RecursionError, MemoryError, ValueError):  # parsed once already
        tree = ast.Module(body=[], type_ignores=[])
    check_imports(tree, where=str(p))
    doc = ast.get_docstring(tree) or ""
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
        lines = str(exc).strip().splitlines() or ["invalid"]
        at = next((ln.split("<anon>:", 1)[1] for ln in lines if "--> <anon>:" in ln), None)
        where = f"{p}:{at.strip()}" if at else str(p)  # line:column, when wasmtime says it
        raise BuildError(f"{where}: neither a wasm binary nor valid WAT: {lines[0]}") from None


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
    h.update(repr(AVAILABLE).encode())  # the runtime bundles exactly these modules
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


def _runtime_manifest() -> dict[str, str]:
    from fades import __version__

    return {"source_hash": runtime_source_hash(), "fades_version": __version__}


def _same_runtime(art: Artifact, key: SigningKey | None, want: dict[str, str]) -> bool:
    """``art`` is the runtime ``build_runtime`` would make now, signed by ``key``."""
    signer = key.id if key is not None else None
    return (
        art.kind == "runtime"
        and art.signer == signer
        and all(art.manifest.get(k) == v for k, v in want.items())
    )


def _signed_cache(key: SigningKey, want: dict[str, str]) -> Path:
    return paths.cache() / "runtime" / f"runtime-{want['source_hash']}-{key.id}.fart"


def _reuse(
    key: SigningKey | None, want: dict[str, str], store: FunctionStore | None
) -> Artifact | None:
    """An already signed runtime for this source hash and key: installed, or cached."""
    if store is not None:
        for digest in store.runtimes():
            try:
                art = store.get(digest)
            except ArtifactError:
                continue
            if _same_runtime(art, key, want):
                return art
    if key is None:
        return None  # an unsigned runtime (tests only) is not kept
    try:
        art = read_artifact(_signed_cache(key, want))
        art.verify(TrustStore([key.public]))
    except (OSError, ArtifactError):
        return None
    return art if _same_runtime(art, key, want) else None


def build_runtime(*, key: SigningKey | None, store: FunctionStore | None = None) -> Artifact:
    """The signed runtime artifact that lets a node run Python functions.

    Built and signed once per runtime source hash (the guest sources and the module list)
    and fades version, for each key: a second call returns the same artifact (one digest),
    taken from ``store`` if it holds it, or from the signed copy kept in ``FADES_CACHE``.
    """
    want = _runtime_manifest()
    found = _reuse(key, want, store)
    if found is not None:
        return found
    art = create(
        "runtime",
        "fades-python-runtime",
        runtime_wasm(),
        key=key,
        entry="run",
        description=f"Python runtime for fades {want['fades_version']}",
        extra=want,
    )
    if key is None:
        return art
    cached = _signed_cache(key, want)
    with contextlib.suppress(OSError):
        tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
        tmp.write_bytes(art.to_bytes())
        tmp.replace(cached)
        _prune_signed(cached.parent)
    return art


_KEEP_SIGNED = 4  # signed runtime copies kept in the cache (about 19 MB each)


def _prune_signed(folder: Path) -> None:
    """Keep the newest few signed runtime copies (one per key in use), drop the rest."""
    copies = []
    for p in folder.glob("runtime-*-*.fart"):
        with contextlib.suppress(OSError):
            copies.append((p.stat().st_mtime_ns, p))
    for _, p in sorted(copies, reverse=True)[_KEEP_SIGNED:]:
        with contextlib.suppress(OSError):
            p.unlink()
