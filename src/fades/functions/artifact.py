"""The signed, content-addressed artifact format (pure code, no I/O).

Layout::

    b"FADESART"  u32 version  u32 manifest length  u32 signature length
    manifest (canonical JSON)  signature (Ed25519 over the manifest)  payload

The manifest names the payload's SHA-256, so signing the manifest signs the payload. The
artifact's address is ``sha256:`` + the SHA-256 of the manifest bytes.

Kinds:

* ``python``: payload is Python source, run by the shared Python runtime (``abi`` fades-py/1);
* ``core``: payload is a core WebAssembly module speaking the fades-core/1 ABI;
* ``runtime``: payload is the Python runtime component itself (one per fades version).
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from fades.errors import ArtifactFormatError, ArtifactRejected, SignatureError
from fades.functions.keys import SigningKey, TrustStore
from fades.functions.validate import CORE_ABI as CORE_ABI
from fades.functions.validate import (
    KINDS,
    MAX_ARTIFACT_BYTES,
    MAX_MANIFEST_BYTES,
    check_manifest,
    check_payload,
)
from fades.functions.validate import PYTHON_ABI as PYTHON_ABI

MAGIC = b"FADESART"
VERSION = 1
_HEAD = struct.Struct("<8sIII")
Kind = Literal["python", "core", "runtime"]


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Artifact:
    """A parsed artifact. ``manifest_bytes`` are kept verbatim so signatures stay checkable."""

    manifest: dict[str, Any]
    manifest_bytes: bytes
    signature: bytes
    payload: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + sha256_hex(self.manifest_bytes)

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def kind(self) -> Kind:
        kind: Kind = self.manifest["kind"]
        return kind

    @property
    def entry(self) -> str:
        return str(self.manifest.get("entry", "main"))

    @property
    def abi(self) -> str:
        return str(self.manifest["abi"])

    @property
    def signer(self) -> str | None:
        s = self.manifest.get("signer")
        return str(s) if s else None

    @property
    def payload_sha256(self) -> str:
        return str(self.manifest["payload_sha256"])

    @property
    def created_ns(self) -> int:
        """Build time in nanoseconds (artifacts older than the field: ``created`` seconds)."""
        ns = self.manifest.get("created_ns")
        if isinstance(ns, int):
            return ns
        secs = self.manifest.get("created", 0)
        return secs * 1_000_000_000 if isinstance(secs, int) else 0

    @property
    def order_key(self) -> tuple[int, str]:
        """Total order of versions: build time (ns), then digest. Two artifacts never tie, and
        every process orders them the same way; the newest of a name has the largest key."""
        return (self.created_ns, self.digest)

    def to_bytes(self) -> bytes:
        head = _HEAD.pack(MAGIC, VERSION, len(self.manifest_bytes), len(self.signature))
        return head + self.manifest_bytes + self.signature + self.payload

    def __len__(self) -> int:
        return _HEAD.size + len(self.manifest_bytes) + len(self.signature) + len(self.payload)

    def verify(self, trust: TrustStore) -> None:
        """Check that the artifact is signed by a trusted key and that nothing was altered.

        Then check that the payload is what its kind says (:meth:`check`).

        Raises:
            SignatureError: unsigned, untrusted signer, bad signature, or payload mismatch.
            ArtifactRejected: the payload does not match its kind.
        """
        what = f"artifact {self.name!r} ({self.digest[:19]}…)"
        if not self.signature or not self.signer:
            raise SignatureError(f"{what} is unsigned; nodes run only signed artifacts")
        trust.verify(self.signer, self.signature, self.manifest_bytes, what=what)
        if sha256_hex(self.payload) != self.payload_sha256:
            raise SignatureError(
                f"{what}: payload does not match the digest in its signed manifest (tampered)"
            )
        key = (self.kind, self.entry, self.payload_sha256)  # the payload is the signed one
        if key not in _CHECKED:
            self.check()
            with _CREATED_LOCK:
                if len(_CHECKED) > 4096:
                    _CHECKED.clear()
                _CHECKED.add(key)

    def check(self) -> None:
        """Check that the payload matches the kind (Python source, fades-core/1 module, runtime).

        Part of :meth:`verify`, so whoever turns bytes into a verified artifact (``fn add``,
        the store at load, the controller's upload) refuses a payload that is not what its
        manifest says. ``verify`` remembers a signed payload that passed, for this process.

        Raises:
            ArtifactRejected: naming what is wrong.
        """
        check_payload(self.kind, self.payload, entry=self.entry, where=f"artifact {self.name!r}")


def create(
    kind: Kind,
    name: str,
    payload: bytes,
    *,
    key: SigningKey | None,
    entry: str = "main",
    description: str = "",
    extra: dict[str, Any] | None = None,
) -> Artifact:
    """Build an artifact around ``payload`` and sign it with ``key`` (None: unsigned)."""
    from fades import __version__

    if kind not in KINDS:
        raise ArtifactFormatError(f"unknown artifact kind {kind!r}; expected one of {list(KINDS)}")
    created_ns = _next_created_ns()
    manifest: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "abi": KINDS[kind],
        "entry": entry,
        "description": description,
        "payload_sha256": sha256_hex(payload),
        "payload_size": len(payload),
        "signer": key.id if key else None,
        "created": created_ns // 1_000_000_000,
        "created_ns": created_ns,
        "fades_version": __version__,
        **(extra or {}),
    }
    if extra and "created" in extra and "created_ns" not in extra:
        manifest["created_ns"] = _check_int_field(extra["created"]) * 1_000_000_000
    check_manifest(manifest)
    mbytes = canonical(manifest)
    if len(mbytes) > MAX_MANIFEST_BYTES:
        raise ArtifactRejected(
            f"artifact manifest has {len(mbytes)} bytes; a manifest is at most "
            f"{MAX_MANIFEST_BYTES} (shorten the description)",
            field="manifest",
        )
    signature = key.sign(mbytes) if key else b""
    return Artifact(manifest, mbytes, signature, payload)


def parse(data: bytes) -> Artifact:
    """Parse artifact bytes (no signature check: call :meth:`Artifact.verify`).

    Defensive: sizes are checked before anything is decoded, the manifest is bounded
    (:data:`~fades.functions.validate.MAX_MANIFEST_BYTES`) before it is parsed as JSON, and
    every field's type and rule is checked (:func:`~fades.functions.validate.check_manifest`).

    Raises:
        ArtifactFormatError: the bytes are not a well-formed fades artifact
            (:class:`~fades.errors.ArtifactRejected` when a field breaks a rule).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"parse() takes bytes, not {type(data).__name__}")
    if len(data) < _HEAD.size or bytes(data[:8]) != MAGIC:
        raise ArtifactFormatError(
            "not a fades artifact (bad magic); build it with 'fades fn build'"
        )
    if len(data) > MAX_ARTIFACT_BYTES:
        raise ArtifactRejected(
            f"artifact has {len(data)} bytes; an artifact is at most {MAX_ARTIFACT_BYTES}",
            field="size",
        )
    _, version, mlen, slen = _HEAD.unpack_from(data, 0)
    if version != VERSION:
        raise ArtifactFormatError(f"unsupported artifact version {version} (expected {VERSION})")
    if mlen > MAX_MANIFEST_BYTES:
        raise ArtifactRejected(
            f"artifact manifest has {mlen} bytes; a manifest is at most {MAX_MANIFEST_BYTES}",
            field="manifest",
        )
    if slen not in (0, 64):
        raise SignatureError(f"artifact signature has {slen} bytes; Ed25519 uses 64")
    if _HEAD.size + mlen + slen > len(data):
        raise ArtifactFormatError("truncated artifact")
    mbytes = bytes(data[_HEAD.size : _HEAD.size + mlen])
    try:
        manifest = json.loads(mbytes, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        problem = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise ArtifactFormatError(f"artifact manifest is not JSON: {problem}") from None
    payload = bytes(data[_HEAD.size + mlen + slen :])
    check_manifest(manifest)
    sig = bytes(data[_HEAD.size + mlen : _HEAD.size + mlen + slen])
    return Artifact(manifest, mbytes, sig, payload)


_CREATED_LOCK = threading.Lock()
_LAST_CREATED_NS = 0
_CHECKED: set[tuple[str, str, str]] = set()


def _next_created_ns() -> int:
    """Nanosecond wall-clock time, strictly increasing within this process."""
    global _LAST_CREATED_NS
    with _CREATED_LOCK:
        _LAST_CREATED_NS = max(time.time_ns(), _LAST_CREATED_NS + 1)
        return _LAST_CREATED_NS


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a field appears twice")
    return out


def _check_int_field(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ArtifactRejected(f"manifest field 'created' is {value!r}; it must be an integer")
    return value
