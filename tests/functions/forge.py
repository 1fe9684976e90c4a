"""Hand-made artifacts for the hostile cases: manifests that ``create`` would refuse, signed."""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

from fades.functions.artifact import _HEAD, MAGIC, VERSION
from fades.functions.keys import SigningKey

SOURCE = b"def main(data, params):\n    return 1\n"
CORE_WAT = """
(module
  (memory (export "memory") 1)
  (func (export "fades_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "fades_run") (param i32 i32) (result i32) (i32.const 0)))
"""


def manifest(name: str = "f", payload: bytes = SOURCE, **fields: Any) -> dict[str, Any]:
    """A manifest like ``create`` writes, with ``fields`` overriding (None deletes a field)."""
    m: dict[str, Any] = {
        "name": name,
        "kind": "python",
        "abi": "fades-py/1",
        "entry": "main",
        "description": "",
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "payload_size": len(payload),
        "created": 1_700_000_000,
        "created_ns": 1_700_000_000_000_000_000,
        "fades_version": "0",
    }
    m.update(fields)
    return {k: v for k, v in m.items() if v is not None}


def raw_artifact(mbytes: bytes, payload: bytes, key: SigningKey | None) -> bytes:
    """Artifact bytes around exactly these manifest bytes, signed by ``key`` (None: unsigned)."""
    sig = key.sign(mbytes) if key else b""
    return struct.pack(_HEAD.format, MAGIC, VERSION, len(mbytes), len(sig)) + mbytes + sig + payload


def forged(
    key: SigningKey | None, payload: bytes = SOURCE, *, name: str = "f", **fields: Any
) -> bytes:
    """A (signed) artifact whose manifest is ``manifest(name, payload, **fields)``."""
    m = manifest(name, payload, **fields)
    if key is not None and "signer" not in fields:
        m["signer"] = key.id
    mbytes = json.dumps(m, sort_keys=True, separators=(",", ":")).encode()
    return raw_artifact(mbytes, payload, key)
