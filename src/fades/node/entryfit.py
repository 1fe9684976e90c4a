"""Keep a node's registry entry small enough to be put: a heartbeat must never fail by size.

A node's entry (:class:`~fades.fabric.protocol.NodeInfo`) carries its ingest statistics and
one line per (connector, location, sensor type) it holds. Both grow with what arrives over
MQTT or is imported, and a NATS message has a size limit (1 MiB by default): an entry over it
is refused on every heartbeat and the node is taken for dead. :func:`fit_entry` encodes the
entry within :data:`MAX_ENTRY_BYTES`: long statistics strings are cut first, then the data
lines holding the fewest rows are left out (the node still serves; placement by data locality
no longer sees the lines left out, and the node logs how many).
"""

from __future__ import annotations

from typing import Any

from fades.fabric.protocol import NodeInfo

#: a node's registry entry is encoded within this many bytes
MAX_ENTRY_BYTES = 256 * 1024
#: a string in the entry's ``stats`` is cut to this many characters
MAX_STAT_CHARS = 300


def _cut(v: Any) -> Any:
    if isinstance(v, str) and len(v) > MAX_STAT_CHARS:
        return v[: MAX_STAT_CHARS - 3] + "..."
    return v


def fit_entry(info: NodeInfo, limit: int = MAX_ENTRY_BYTES) -> tuple[bytes, int]:
    """``(encoded entry, data lines left out)``, the encoding at most ``limit`` bytes when
    the entry without data lines fits (it always does unless ``limit`` is tiny)."""
    entry = info.encode()
    if len(entry) <= limit:
        return entry, 0
    info = info.model_copy(update={"stats": {k: _cut(v) for k, v in info.stats.items()}})
    entry = info.encode()
    if len(entry) <= limit:
        return entry, 0
    by_rows = sorted(info.data, key=lambda d: d.rows, reverse=True)
    room = limit - len(info.model_copy(update={"data": []}).encode())
    kept = []
    for d in by_rows:
        size = len(d.model_dump_json()) + 1  # and a comma
        if size > room:
            break
        room -= size
        kept.append(d)
    entry = info.model_copy(update={"data": kept}).encode()
    return entry, len(info.data) - len(kept)
