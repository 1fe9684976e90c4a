"""A node's repository of verified artifacts, addressed by digest and by name.

Artifacts are verified on the way in (signature, trusted signer, payload digest) and again
when loaded from disk, so a file altered at rest is refused too.
"""

from __future__ import annotations

import threading
from pathlib import Path

from fades.errors import ArtifactError, ArtifactFormatError
from fades.functions.artifact import PYTHON_ABI, Artifact, parse
from fades.functions.keys import TrustStore


class FunctionStore:
    """Verified artifacts on disk (``<dir>/<hex>.fart``), with an in-memory index."""

    def __init__(self, directory: str | Path, trust: TrustStore) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.trust = trust
        self._lock = threading.Lock()
        self._verified: dict[str, Artifact] = {}
        self._names: dict[str, tuple[int, str]] = {}
        self._runtimes: dict[str, tuple[int, str]] = {}
        for path in sorted(self.dir.glob("*.fart")):
            try:
                self._index(parse(path.read_bytes()))
            except ArtifactError:
                continue  # verified (and refused with a reason) when someone asks for it

    def _index(self, art: Artifact) -> None:
        created = int(art.manifest.get("created", 0))
        table = self._runtimes if art.kind == "runtime" else self._names
        key = art.abi if art.kind == "runtime" else art.name
        if key not in table or table[key][0] <= created:
            table[key] = (created, art.digest)

    def add(self, data: bytes | Artifact) -> Artifact:
        """Verify and store an artifact. Returns it; raises ``SignatureError`` if refused."""
        art = data if isinstance(data, Artifact) else parse(data)
        art.verify(self.trust)
        path = self.dir / f"{art.digest.removeprefix('sha256:')}.fart"
        with self._lock:
            if not path.exists():
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(art.to_bytes())
                tmp.replace(path)
            self._verified[art.digest] = art
            self._index(art)
        return art

    def resolve(self, ref: str) -> str:
        """Turn a function name or ``sha256:`` reference into a digest."""
        if ref.startswith("sha256:"):
            return ref
        with self._lock:
            hit = self._names.get(ref)
        if hit is None:
            known = ", ".join(sorted(self._names)) or "none"
            raise ArtifactError(f"no function named {ref!r} on this node (known: {known})")
        return hit[1]

    def get(self, ref: str) -> Artifact:
        """The verified artifact for a name or digest."""
        digest = self.resolve(ref)
        with self._lock:
            art = self._verified.get(digest)
        if art is not None:
            return art
        path = self.dir / f"{digest.removeprefix('sha256:')}.fart"
        if not path.exists():
            raise ArtifactError(f"artifact {digest} is not on this node; upload it first")
        art = parse(path.read_bytes())
        if art.digest != digest:
            raise ArtifactFormatError(f"artifact file {path.name} does not hold {digest} (altered)")
        art.verify(self.trust)
        with self._lock:
            self._verified[digest] = art
        return art

    def runtime(self, abi: str = PYTHON_ABI) -> Artifact:
        """The newest verified runtime for ``abi``."""
        with self._lock:
            hit = self._runtimes.get(abi)
        if hit is None:
            raise ArtifactError(
                f"this node holds no Python runtime ({abi}); add one with "
                "'fades fn runtime --key KEY' (or 'fades demo', which does it for you)"
            )
        return self.get(hit[1])

    def names(self) -> dict[str, str]:
        with self._lock:
            return {n: d for n, (_, d) in sorted(self._names.items())}
