"""The function repository: signed artifacts in the Bus's object store.

Artifacts are stored by digest, split into parts of at most :data:`PART_SIZE` (a single
object of several MiB stalls on get), and indexed in a key-value bucket:

* ``d.<hex>``: the record of one artifact (name, kind, abi, size, parts, signer);
* ``n.<name>``: the digest of the newest artifact with that function name;
* ``r.<abi>``: the digest of the newest runtime for that ABI.

"Newest" is the version order (build time, then digest), not upload order: uploading an
older build does not move a name back. The pointer moves by compare-and-set, so two
concurrent uploads cannot both win.

The repository checks the format only. Whoever uploads (the controller) verifies signatures
against its trust store before calling :meth:`put`, and whoever fetches (a node) verifies
again against its own: a repository is storage, not a root of trust.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from fades.bus.base import Bus, KeyValue, ObjectStore
from fades.errors import ArtifactError, ArtifactFormatError, FabricConflict
from fades.fabric.subjects import ARTIFACTS_BUCKET, FUNCTIONS_BUCKET, PART_SIZE
from fades.functions.artifact import Artifact, parse, sha256_hex


@dataclass(slots=True, frozen=True)
class ArtifactRecord:
    digest: str
    name: str
    kind: str
    abi: str
    size: int
    parts: int
    signer: str | None
    uploaded_at: float
    #: build time in ns (version order; 0 in records written before it was kept)
    created_ns: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def order_key(self) -> tuple[int, str]:
        return (self.created_ns, self.digest)


def order_key(art: Artifact) -> tuple[int, str]:
    """The artifact's place in its name's version order: build time (ns), then digest."""
    key = getattr(art, "order_key", None)  # defined by fades.functions (version order)
    if isinstance(key, tuple):
        return (int(key[0]), str(key[1]))
    return (int(art.manifest.get("created", 0)) * 1_000_000_000, art.digest)


def _abi_key(abi: str) -> str:
    return "r." + "".join(c if c.isalnum() or c in "-_" else "_" for c in abi)


def _hex(digest: str) -> str:
    return digest.removeprefix("sha256:")


class ArtifactRepository:
    """Put, resolve and get artifacts held in the fabric."""

    def __init__(self, objects: ObjectStore, index: KeyValue) -> None:
        self.objects = objects
        self.index = index

    @classmethod
    async def open(cls, bus: Bus) -> ArtifactRepository:
        """Open the repository, creating its bucket and index if they do not exist.

        Raises:
            FabricError: the fabric is unreachable.
        """
        return cls(await bus.objects(ARTIFACTS_BUCKET), await bus.kv(FUNCTIONS_BUCKET))

    async def put(self, data: bytes | Artifact, *, rollback: bool = False) -> ArtifactRecord:
        """Store an artifact (format-checked, not signature-checked) and index it.

        ``rollback``: make it its name's current version even if a newer one is held (the
        controller's ``allow_rollback`` upload)."""
        art = data if isinstance(data, Artifact) else parse(data)
        raw = art.to_bytes()
        h = _hex(art.digest)
        parts = max(1, -(-len(raw) // PART_SIZE))
        for i in range(parts):
            await self.objects.put(f"{h}.{i}", raw[i * PART_SIZE : (i + 1) * PART_SIZE])
        key = order_key(art)
        rec = ArtifactRecord(
            digest=art.digest,
            name=art.name,
            kind=art.kind,
            abi=art.abi,
            size=len(raw),
            parts=parts,
            signer=art.signer,
            uploaded_at=time.time(),
            created_ns=key[0],
        )
        await self.index.put(f"d.{h}", json.dumps(rec.to_dict()).encode())
        pointer = _abi_key(art.abi) if art.kind == "runtime" else f"n.{art.name}"
        if rollback:
            await self.index.put(pointer, rec.digest.encode())
        else:
            await self._point(pointer, rec)
        return rec

    async def _point(self, pointer: str, rec: ArtifactRecord) -> None:
        """Make ``pointer`` name ``rec`` unless it names a newer version (CAS, retried)."""
        for _ in range(20):
            cur = await self.index.get(pointer)
            try:
                if cur is None or not cur.value:
                    await self.index.create(pointer, rec.digest.encode())
                    return
                try:
                    held = await self.record(cur.value.decode())
                except ArtifactError:
                    held = None  # its record is gone: any version replaces it
                if held is not None and held.order_key >= rec.order_key:
                    return
                await self.index.update(pointer, rec.digest.encode(), cur.revision)
                return
            except FabricConflict:
                continue  # another upload moved it meanwhile: compare again
        raise FabricConflict(f"repository index {pointer} kept changing; upload again")

    async def _get_key(self, key: str) -> bytes | None:
        entry = await self.index.get(key)
        return entry.value if entry is not None and entry.value else None

    async def resolve(self, ref: str) -> str:
        """A function name, or a ``sha256:`` digest, to the digest held in the repository."""
        if ref.startswith("sha256:"):
            return ref
        value = await self._get_key(f"n.{ref}")
        if value is None:
            raise ArtifactError(f"the repository holds no function named {ref!r}")
        return value.decode()

    async def runtime_digest(self, abi: str) -> str:
        value = await self._get_key(_abi_key(abi))
        if value is None:
            raise ArtifactError(f"the repository holds no runtime for {abi}; upload one")
        return value.decode()

    async def record(self, digest: str) -> ArtifactRecord:
        value = await self._get_key(f"d.{_hex(digest)}")
        if value is None:
            raise ArtifactError(f"the repository holds no artifact {digest}")
        return ArtifactRecord(**json.loads(value))

    async def get(self, ref: str) -> bytes:
        """The artifact's bytes, reassembled; the caller verifies its signature.

        Raises:
            ArtifactError: unknown name or digest.
            ArtifactFormatError: the stored bytes do not hold the digest asked for (altered).
        """
        digest = await self.resolve(ref)
        rec = await self.record(digest)
        h = _hex(digest)
        buf = bytearray()
        for i in range(rec.parts):
            part = await self.objects.get(f"{h}.{i}")
            if part is None:
                raise ArtifactError(f"artifact {digest} is missing part {i} of {rec.parts}")
            buf += part
        try:
            art = parse(bytes(buf))
        except ArtifactFormatError as exc:
            raise ArtifactFormatError(
                f"artifact {digest} in the repository is corrupt: {exc}"
            ) from exc
        if art.digest != digest:
            raise ArtifactFormatError(
                f"artifact {digest} in the repository was altered (it now hashes to {art.digest})"
            )
        if sha256_hex(art.payload) != art.payload_sha256:
            raise ArtifactFormatError(f"artifact {digest} in the repository has an altered payload")
        return bytes(buf)

    async def list(self) -> list[ArtifactRecord]:
        """Every artifact record, newest first."""
        keys = await self.index.keys()  # an empty bucket is []; NATS down raises FabricError
        out = []
        for k in keys:
            if k.startswith("d."):
                value = await self._get_key(k)
                if value:
                    out.append(ArtifactRecord(**json.loads(value)))
        return sorted(out, key=lambda r: r.uploaded_at, reverse=True)
