"""What a valid artifact is: the rules for names, manifests and payloads, checked in one place.

Every path that turns bytes into an artifact a node may run goes through these checks:
``fades fn build`` (before signing), :func:`fades.functions.artifact.parse` (the manifest:
size first, then JSON, then each field's type and rule) and
:meth:`fades.functions.artifact.Artifact.verify` (the payload matches its kind), which
``fn add``, the node's :class:`~fades.functions.store.FunctionStore` (at add and at load) and
the controller's upload all call. A broken rule is an :class:`~fades.errors.ArtifactRejected`
naming the field and the rule.

Limits (constants of this module, stated in docs/functions.md):

* a function name matches :data:`NAME_RULE` (at most :data:`MAX_NAME` characters);
* a manifest is at most :data:`MAX_MANIFEST_BYTES`, holds at most :data:`MAX_FIELDS` fields,
  each a scalar (string, integer, boolean or null); a string is at most :data:`MAX_TEXT`
  characters with no control, format (bidi, zero-width) or unassigned characters;
* a payload is at most :data:`MAX_PAYLOAD` bytes for its kind.
"""

from __future__ import annotations

import ast
import re
import unicodedata
from typing import Any

import wasmtime

from fades.errors import ArtifactRejected

PYTHON_ABI = "fades-py/1"
CORE_ABI = "fades-core/1"
#: artifact kind -> the ABI its manifest must name
KINDS: dict[str, str] = {"python": PYTHON_ABI, "core": CORE_ABI, "runtime": PYTHON_ABI}

MAX_NAME = 64
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*(?:\.[a-z0-9_-]+)*$")
NAME_RULE = (
    f"a function name is 1-{MAX_NAME} characters of a-z, 0-9, '_', '-' and '.', starts with a "
    "letter or digit, and has no '..' and no trailing '.'"
)
ENTRY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
SIGNER_RE = re.compile(r"^[0-9a-f]{16}$")

MAX_MANIFEST_BYTES = 16 * 1024
MAX_FIELDS = 32
MAX_TEXT = 1024
MAX_INT = 2**63 - 1
MAX_PAYLOAD: dict[str, int] = {
    "python": 1 << 20,  # source text
    "core": 16 << 20,  # a core wasm module
    "runtime": 128 << 20,  # the Python runtime component (about 19 MB)
}
MAX_ARTIFACT_BYTES = 64 + MAX_MANIFEST_BYTES + 64 + max(MAX_PAYLOAD.values())

CORE_MAGIC = b"\0asm\x01\0\0\0"
COMPONENT_MAGIC = b"\0asm\x0d\0\x01\0"
_I32, _F64 = "i32", "f64"
CORE_EXPORTS: dict[str, tuple[list[str], list[str]] | None] = {
    "memory": None,  # a memory
    "fades_alloc": ([_I32], [_I32]),
    "fades_run": ([_I32, _I32], [_I32]),
}
CORE_IMPORTS: dict[str, tuple[list[str], list[str]]] = {
    "result_f64": ([_I32, _I32, _F64], []),
    "result_json": ([_I32, _I32], []),
    "log": ([_I32, _I32], []),
}
_BAD_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn"}  # control, format (bidi), surrogate, unassigned


def reject(field: str, problem: str, rule: str, *, where: str = "artifact") -> ArtifactRejected:
    return ArtifactRejected(f"{where}: {field} {problem}; {rule}", field=field)


def check_name(name: object, *, where: str = "artifact", field: str = "name") -> str:
    """``name`` if it is a valid function name, else :class:`ArtifactRejected`."""
    if not isinstance(name, str):
        raise reject(field, f"is a {type(name).__name__}, not a string", NAME_RULE, where=where)
    if len(name) > MAX_NAME or not NAME_RE.match(name):
        shown = ascii(name[:80]) + ("…" if len(name) > 80 else "")
        raise reject(field, f"{shown} is not allowed", NAME_RULE, where=where)
    return name


def clean_text(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` with control/format characters dropped and cut to ``limit`` (for derived text)."""
    kept = "".join(c for c in text if unicodedata.category(c) not in _BAD_CATEGORIES)
    return kept[:limit]


def _check_text(field: str, value: str, *, where: str, limit: int = MAX_TEXT) -> None:
    rule = f"text fields are at most {limit} characters with no control or bidi characters"
    if len(value) > limit:
        raise reject(field, f"has {len(value)} characters", rule, where=where)
    for i, c in enumerate(value):
        if unicodedata.category(c) in _BAD_CATEGORIES:
            raise reject(field, f"holds the character U+{ord(c):04X} at {i}", rule, where=where)


def _check_int(field: str, value: object, *, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_INT:
        raise reject(
            field, f"is {ascii(value)[:40]}", "it must be an integer from 0 to 2**63-1", where=where
        )
    return value


def _check_pattern(
    field: str, value: object, pattern: re.Pattern[str], rule: str, where: str
) -> None:
    if not isinstance(value, str) or not pattern.match(value):
        raise reject(field, f"is {ascii(value)[:80]}", rule, where=where)


def check_manifest(manifest: object) -> dict[str, Any]:
    """Check a decoded manifest's shape, every field's type and rule; return it.

    (The payload's size and digest are checked against the manifest by ``verify``: a
    mismatch there is tampering, a :class:`~fades.errors.SignatureError`.)

    Raises:
        ArtifactRejected: naming the field and the rule it breaks.
    """
    where = "artifact manifest"
    if not isinstance(manifest, dict):
        raise reject(
            "manifest", f"is a JSON {type(manifest).__name__}", "it must be an object", where=where
        )
    if len(manifest) > MAX_FIELDS:
        raise reject(
            "manifest", f"has {len(manifest)} fields", f"at most {MAX_FIELDS}", where=where
        )
    for key in ("name", "kind", "abi", "payload_sha256"):
        if key not in manifest:
            raise ArtifactRejected(f"{where} lacks {key!r}", field=repr(key))
    check_name(manifest["name"], where=where, field="'name'")
    for key, value in manifest.items():
        if not KEY_RE.match(key):
            raise reject(
                "field name", f"{ascii(key)[:40]} is not allowed", "a-z, 0-9 and '_'", where=where
            )
        if value is not None and not isinstance(value, str | int | bool):
            raise reject(
                repr(key), f"is a {type(value).__name__}", "fields are scalars", where=where
            )
        if isinstance(value, str):
            _check_text(repr(key), value, where=where)
        elif isinstance(value, int) and not -MAX_INT <= value <= MAX_INT:
            raise reject(repr(key), "is out of range", "integers fit in 64 bits", where=where)
    kind = manifest["kind"]
    if kind not in KINDS:
        raise reject("'kind'", f"is {ascii(kind)[:40]}", f"one of {sorted(KINDS)}", where=where)
    if manifest["abi"] != KINDS[kind]:
        raise reject(
            "'abi'", f"is {ascii(manifest['abi'])[:40]}", f"{kind} is {KINDS[kind]}", where=where
        )
    _check_pattern("'payload_sha256'", manifest["payload_sha256"], HEX64_RE, "64 hex digits", where)
    if "entry" in manifest:
        _check_pattern("'entry'", manifest["entry"], ENTRY_RE, "a Python identifier", where)
    if manifest.get("signer") is not None:
        _check_pattern("'signer'", manifest["signer"], SIGNER_RE, "a 16-hex-digit key id", where)
    for key in ("created", "created_ns", "payload_size"):
        if key in manifest:
            _check_int(repr(key), manifest[key], where=where)
    return manifest


# --- payloads --------------------------------------------------------------------------------
def check_python_source(payload: bytes, *, entry: str = "main", where: str = "source") -> str:
    """Check that ``payload`` is a Python function's source; return it as text.

    Parsing is bounded: size first, then UTF-8, then the parser, whose depth errors
    (RecursionError, MemoryError, "too many nested parentheses") become one clear line.

    Raises:
        ArtifactRejected: ``field`` is "payload"; ``context["line"]`` where there is one.
    """
    limit = MAX_PAYLOAD["python"]
    if len(payload) > limit:
        raise reject(
            "payload", f"is {len(payload)} bytes", f"Python source is at most {limit}", where=where
        )
    if payload[:4] == b"\0asm":
        raise reject(
            "payload", "is WebAssembly", "a python artifact carries Python source", where=where
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = payload[: exc.start].count(b"\n") + 1
        raise ArtifactRejected(
            f"{where}:{line}: not UTF-8 text (byte 0x{payload[exc.start]:02x} at offset "
            f"{exc.start}); Python source must be UTF-8",
            field="payload",
            line=line,
        ) from None
    if "\0" in text:
        line = text[: text.index("\0")].count("\n") + 1
        raise ArtifactRejected(
            f"{where}:{line}: a NUL byte; Python source is text", field="payload", line=line
        )
    try:
        tree = ast.parse(text, filename=where)
    except SyntaxError as exc:
        raise ArtifactRejected(
            f"{where}:{exc.lineno}: syntax error: {exc.msg}", field="payload", line=exc.lineno
        ) from None
    except (RecursionError, MemoryError):
        raise ArtifactRejected(
            f"{where}: an expression or block is nested too deeply for the Python parser; "
            "split it into smaller statements",
            field="payload",
        ) from None
    except ValueError as exc:
        raise ArtifactRejected(f"{where}: cannot parse: {exc}", field="payload") from None
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    if entry not in defined:
        raise ArtifactRejected(
            f"{where} defines no top-level function {entry!r} "
            f"(found: {', '.join(sorted(defined)) or 'none'})",
            field="payload",
        )
    return text


_ENGINE: wasmtime.Engine | None = None


def _signature(t: wasmtime.FuncType) -> tuple[list[str], list[str]]:
    return [str(p) for p in t.params], [str(r) for r in t.results]


#: largest function body in a core module (bytes): compiling a 7 MB one took about 2 GB and a
#: minute, before anything ran (found by the hostile review)
MAX_CORE_FUNCTION_BYTES = 1024 * 1024


def _leb(data: bytes, pos: int) -> tuple[int, int]:
    """An unsigned LEB128 at ``pos``: (value, position after it); ValueError if cut short."""
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 35:
            raise ValueError("bad LEB128")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def largest_function_body(wasm: bytes) -> int:
    """The size of the largest function body in a core module's code section, read without
    compiling it (0 if the module is malformed: the compiler then says why)."""
    pos, biggest = 8, 0
    try:
        while pos < len(wasm):
            section, pos = wasm[pos], pos + 1
            size, pos = _leb(wasm, pos)
            end = pos + size
            if section == 10:  # code: count, then (size, body) per function
                count, at = _leb(wasm, pos)
                for _ in range(count):
                    body, at = _leb(wasm, at)
                    biggest = max(biggest, body)
                    at += body
                    if at > end:
                        break
            pos = end
    except ValueError:
        return biggest
    return biggest


def check_core_module(payload: bytes, *, where: str = "module") -> None:
    """Check that ``payload`` is a core wasm module speaking fades-core/1 and nothing else.

    Raises:
        ArtifactRejected: too large, not a core module, a missing or mistyped export, or an
            import other than ``fades.{result_f64, result_json, log}`` with their signatures.
    """
    global _ENGINE
    limit = MAX_PAYLOAD["core"]
    if len(payload) > limit:
        raise reject(
            "payload", f"is {len(payload)} bytes", f"a core module is at most {limit}", where=where
        )
    if payload[:8] != CORE_MAGIC:
        what = "a component" if payload[:8] == COMPONENT_MAGIC else "not WebAssembly"
        raise reject("payload", f"is {what}", "a core artifact is a core wasm module", where=where)
    biggest = largest_function_body(payload)
    if biggest > MAX_CORE_FUNCTION_BYTES:
        raise reject(
            "payload",
            f"has a function body of {biggest} bytes",
            f"a core module's function is at most {MAX_CORE_FUNCTION_BYTES} bytes "
            "(compiling larger ones takes minutes and gigabytes)",
            where=where,
        )
    if _ENGINE is None:
        _ENGINE = wasmtime.Engine()
    try:
        module = wasmtime.Module(_ENGINE, payload)
    except wasmtime.WasmtimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid"
        raise ArtifactRejected(
            f"{where} is not a valid WebAssembly module: {first}", field="payload"
        ) from None
    exports = {e.name: e.type for e in module.exports}
    missing = [e for e in CORE_EXPORTS if e not in exports]
    if missing:
        raise ArtifactRejected(
            f"{where} lacks the export(s) {', '.join(missing)} required by fades-core/1",
            field="payload",
        )
    for name, sig in CORE_EXPORTS.items():
        t = exports[name]
        ok = (
            isinstance(t, wasmtime.MemoryType)
            if sig is None
            else (isinstance(t, wasmtime.FuncType) and _signature(t) == sig)
        )
        if not ok:
            want = "a memory" if sig is None else f"a function {sig[0]} -> {sig[1]}"
            raise ArtifactRejected(
                f"{where} exports {name} that is not {want} (fades-core/1)", field="payload"
            )
    allowed = f"fades.{{{', '.join(sorted(CORE_IMPORTS))}}}"
    for imp in module.imports:
        sig = CORE_IMPORTS.get(imp.name or "") if imp.module == "fades" else None
        if sig is None:
            raise ArtifactRejected(
                f"{where} imports {imp.module}.{imp.name}; core modules may import only {allowed}",
                field="payload",
            )
        t = imp.type
        if not isinstance(t, wasmtime.FuncType) or _signature(t) != sig:
            raise ArtifactRejected(
                f"{where} imports fades.{imp.name} with the wrong type; fades-core/1 has "
                f"{sig[0]} -> {sig[1]}",
                field="payload",
            )


def check_runtime(payload: bytes, *, where: str = "runtime") -> None:
    """A runtime is a wasm component of bounded size (compiled, and checked, when first run)."""
    limit = MAX_PAYLOAD["runtime"]
    if len(payload) > limit:
        raise reject(
            "payload", f"is {len(payload)} bytes", f"a runtime is at most {limit}", where=where
        )
    if payload[:8] != COMPONENT_MAGIC:
        raise reject("payload", "is not a wasm component", "a runtime is a component", where=where)


def check_payload(kind: str, payload: bytes, *, entry: str = "main", where: str) -> None:
    """The one check that a payload matches its kind (build, add, load and upload use it)."""
    if kind == "python":
        check_python_source(payload, entry=entry, where=where)
    elif kind == "core":
        check_core_module(payload, where=where)
    elif kind == "runtime":
        check_runtime(payload, where=where)
    else:
        raise reject(
            "'kind'", f"is {ascii(kind)[:40]}", f"one of {sorted(MAX_PAYLOAD)}", where=where
        )
