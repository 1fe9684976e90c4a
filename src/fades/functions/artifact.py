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
import time
from dataclasses import dataclass
from typing import Any, Literal

from fades.errors import ArtifactFormatError, SignatureError
from fades.functions.keys import SigningKey, TrustStore

MAGIC = b"FADESART"
VERSION = 1
_HEAD = struct.Struct("<8sIII")
Kind = Literal["python", "core", "runtime"]
PYTHON_ABI = "fades-py/1"
CORE_ABI = "fades-core/1"
KINDS: dict[str, str] = {"python": PYTHON_ABI, "core": CORE_ABI, "runtime": PYTHON_ABI}


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

    def to_bytes(self) -> bytes:
        head = _HEAD.pack(MAGIC, VERSION, len(self.manifest_bytes), len(self.signature))
        return head + self.manifest_bytes + self.signature + self.payload

    def __len__(self) -> int:
        return _HEAD.size + len(self.manifest_bytes) + len(self.signature) + len(self.payload)

    def verify(self, trust: TrustStore) -> None:
        """Check that the artifact is signed by a trusted key and that nothing was altered.

        Raises:
            SignatureError: unsigned, untrusted signer, bad signature, or payload mismatch.
        """
        what = f"artifact {self.name!r} ({self.digest[:19]}…)"
        if not self.signature or not self.signer:
            raise SignatureError(f"{what} is unsigned; nodes run only signed artifacts")
        trust.verify(self.signer, self.signature, self.manifest_bytes, what=what)
        if sha256_hex(self.payload) != self.payload_sha256:
            raise SignatureError(
                f"{what}: payload does not match the digest in its signed manifest (tampered)"
            )


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
    manifest: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "abi": KINDS[kind],
        "entry": entry,
        "description": description,
        "payload_sha256": sha256_hex(payload),
        "payload_size": len(payload),
        "signer": key.id if key else None,
        "created": int(time.time()),
        "fades_version": __version__,
        **(extra or {}),
    }
    mbytes = canonical(manifest)
    signature = key.sign(mbytes) if key else b""
    return Artifact(manifest, mbytes, signature, payload)


def parse(data: bytes) -> Artifact:
    """Parse artifact bytes (no signature check: call :meth:`Artifact.verify`).

    Raises:
        ArtifactFormatError: the bytes are not a well-formed fades artifact.
    """
    if len(data) < _HEAD.size or data[:8] != MAGIC:
        raise ArtifactFormatError(
            "not a fades artifact (bad magic); build it with 'fades fn build'"
        )
    _, version, mlen, slen = _HEAD.unpack_from(data, 0)
    if version != VERSION:
        raise ArtifactFormatError(f"unsupported artifact version {version} (expected {VERSION})")
    if _HEAD.size + mlen + slen > len(data):
        raise ArtifactFormatError("truncated artifact")
    mbytes = data[_HEAD.size : _HEAD.size + mlen]
    try:
        manifest = json.loads(mbytes)
    except ValueError as exc:
        raise ArtifactFormatError(f"artifact manifest is not JSON: {exc}") from None
    if slen not in (0, 64):
        raise SignatureError(f"artifact signature has {slen} bytes; Ed25519 uses 64")
    for key in ("name", "kind", "abi", "payload_sha256"):
        if key not in manifest:
            raise ArtifactFormatError(f"artifact manifest lacks {key!r}")
    if manifest["kind"] not in KINDS:
        raise ArtifactFormatError(f"unknown artifact kind {manifest['kind']!r}")
    sig = data[_HEAD.size + mlen : _HEAD.size + mlen + slen]
    payload = data[_HEAD.size + mlen + slen :]
    return Artifact(manifest, bytes(mbytes), bytes(sig), bytes(payload))
