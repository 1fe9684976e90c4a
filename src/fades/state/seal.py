"""Sealing checkpoints: a binary record with an HMAC, and the key it is made with.

A sealed checkpoint is ``b"FCK1"``, a u32 header length, a JSON header (task id, digest,
node, seq, created_at), the state bytes, then HMAC-SHA256 over all of that. The HMAC protects
against a checkpoint altered in storage or in transit (a bit flip, someone with write access to
the bucket or the node folder but not the key) and against replaying one task's checkpoint
as another's; the digest in the header keeps a checkpoint from being restored into another
function. It does not protect against a holder of the key, nor against the function itself:
the state is whatever the function's sandbox produced, so a hostile function can only corrupt
its own state.

The key (:func:`state_key`): ``FADES_STATE_KEY`` if set, else (a node on a fabric) one derived
from the fabric token ``FADES_NATS_TOKEN``, else ``state.key`` in the node's folder, created
with 32 random bytes (mode 0600) on first use. Checkpoints move between nodes only when the
nodes share the key: set ``FADES_STATE_KEY`` (or a token) alike on every node.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import struct
from pathlib import Path

from fades.errors import CheckpointRejected, StateError
from fades.state.base import Checkpoint

MAGIC = b"FCK1"
_HEAD = struct.Struct("<4sI")
_MAC = 32
#: The largest state one checkpoint may hold (bytes); ``FADES_STATE_MAX_BYTES`` overrides.
MAX_STATE_BYTES = 512 << 10
#: ``FADES_STATE_KEY`` shorter than this is refused.
MIN_KEY_CHARS = 16
KEY_FILE = "state.key"


def max_state_bytes() -> int:
    raw = os.environ.get("FADES_STATE_MAX_BYTES")
    if raw is None:
        return MAX_STATE_BYTES
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"FADES_STATE_MAX_BYTES must be an integer, not {raw!r}") from None
    if value < 1024:
        raise ValueError(f"FADES_STATE_MAX_BYTES must be at least 1024, not {value}")
    return value


def state_key(home: str | Path | None, *, fabric_secret: str | None = None) -> bytes:
    """The HMAC key for checkpoints: ``FADES_STATE_KEY``, else one derived from the fabric's
    secret (``FADES_NATS_TOKEN``, which every node of the fabric shares), else
    ``<home>/state.key``."""
    env = os.environ.get("FADES_STATE_KEY")
    if env is not None:
        if len(env) < MIN_KEY_CHARS:
            raise ValueError(f"FADES_STATE_KEY must be at least {MIN_KEY_CHARS} characters")
        return hashlib.sha256(b"fades-state\0" + env.encode()).digest()
    if fabric_secret:
        return hashlib.sha256(b"fades-state-fabric\0" + fabric_secret.encode()).digest()
    if home is None:
        raise ValueError("no FADES_STATE_KEY and no node folder to keep a state key in")
    path = Path(home) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
        try:
            os.link(tmp, path)  # first writer wins; a racing one reads the winner's key
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = path.read_bytes()
    if len(key) < MIN_KEY_CHARS:
        raise ValueError(f"{path}: a state key needs at least {MIN_KEY_CHARS} bytes")
    return key


def seal(key: bytes, ckpt: Checkpoint, *, limit: int | None = None) -> bytes:
    """The sealed record of ``ckpt``.

    Raises:
        StateError: the state is larger than ``limit`` (default :func:`max_state_bytes`).
    """
    bound = max_state_bytes() if limit is None else limit
    if len(ckpt.state) > bound:
        raise StateError(
            f"task {ckpt.task_id}: state of {len(ckpt.state)} bytes exceeds the limit of "
            f"{bound} bytes (FADES_STATE_MAX_BYTES)"
        )
    header = json.dumps(
        {
            "task_id": ckpt.task_id,
            "digest": ckpt.digest,
            "node": ckpt.node,
            "seq": ckpt.seq,
            "created_at": ckpt.created_at,
        },
        separators=(",", ":"),
    ).encode()
    body = _HEAD.pack(MAGIC, len(header)) + header + ckpt.state
    return body + hmac.new(key, body, hashlib.sha256).digest()


def unseal(key: bytes, record: bytes, *, task_id: str, digest: str) -> Checkpoint:
    """Check and open a sealed record written for ``task_id`` by function ``digest``.

    Raises:
        CheckpointRejected: naming the reason (malformed, altered, another task or function).
    """
    where = f"checkpoint of task {task_id}"
    if len(record) < _HEAD.size + _MAC:
        raise CheckpointRejected(f"{where} refused: truncated ({len(record)} bytes)")
    body, mac = record[:-_MAC], record[-_MAC:]
    if not hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest(), mac):
        raise CheckpointRejected(
            f"{where} refused: integrity check failed (altered, or sealed with another "
            f"state key; see FADES_STATE_KEY)"
        )
    magic, hlen = _HEAD.unpack_from(body)
    if magic != MAGIC or _HEAD.size + hlen > len(body):
        raise CheckpointRejected(f"{where} refused: not a fades checkpoint record")
    try:
        h = json.loads(body[_HEAD.size : _HEAD.size + hlen])
        ckpt = Checkpoint(
            task_id=str(h["task_id"]),
            digest=str(h["digest"]),
            node=str(h["node"]),
            seq=int(h["seq"]),
            state=bytes(body[_HEAD.size + hlen :]),
            created_at=float(h["created_at"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointRejected(f"{where} refused: malformed header ({exc})") from None
    if ckpt.task_id != task_id:
        raise CheckpointRejected(f"{where} refused: it was written for task {ckpt.task_id}")
    if ckpt.digest != digest:
        raise CheckpointRejected(
            f"{where} refused: written by function {ckpt.digest[:16]}, not {digest[:16]} "
            f"(a checkpoint restores only into the function that wrote it)"
        )
    return ckpt
