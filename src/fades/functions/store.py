"""A node's repository of verified artifacts, addressed by digest and by name.

Only what verifies is indexed. Artifacts are verified on the way in (manifest rules,
signature, trusted signer, payload digest, payload matches its kind) and again when the store
loads its folder, so a file dropped into or altered in ``artifacts/`` can never resolve a
name. A file that fails for a reason that cannot change (malformed, unsigned, tampered, a
payload that is not its kind) is moved to ``artifacts/quarantine/`` with a ``.why`` note,
reported as a logged warning and listed by :meth:`FunctionStore.quarantine`; the store keeps
loading the rest. A file signed by a key this node does not trust is left in place and
listed in :attr:`FunctionStore.skipped`; when the node's trust changes (``fades keys trust``,
seen by :meth:`~fades.functions.keys.TrustStore.refresh` without a restart), those files are
loaded again at the next lookup and indexed if their signer is now trusted.

Versions of a name are ordered by :attr:`~fades.functions.artifact.Artifact.order_key`
(nanosecond build time, then digest): the newest wins, in every process, whatever the order
in which the files were added or listed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fades.errors import (
    ArtifactError,
    ArtifactFormatError,
    ArtifactQuarantined,
    ArtifactRejected,
)
from fades.functions.artifact import PYTHON_ABI, Artifact, parse
from fades.functions.keys import TrustStore
from fades.functions.validate import MAX_ARTIFACT_BYTES, clean_text

log = logging.getLogger(__name__)

QUARANTINE = "quarantine"
_CACHE_PAYLOAD = 1 << 20  # artifacts up to this size stay in memory once verified
_MAX_NOTES = 1000  # quarantine notes read by quarantine()
OrderKey = tuple[int, str]


@dataclass(frozen=True, slots=True)
class Quarantined:
    """An artifact file moved aside: where it was, where it is, and why."""

    file: str
    path: Path
    kind: str
    reason: str
    name: str | None = None
    at: float = 0.0


class FunctionStore:
    """Verified artifacts on disk (``<dir>/<hex>.fart``), with an in-memory index."""

    def __init__(self, directory: str | Path, trust: TrustStore) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.quarantine_dir = self.dir / QUARANTINE
        self.trust = trust
        self._lock = threading.RLock()
        self._verified: dict[str, Artifact] = {}
        self._names: dict[str, dict[str, OrderKey]] = {}
        self._runtimes: dict[str, dict[str, OrderKey]] = {}
        self.quarantined: list[Quarantined] = []  # moved aside by this store
        self.skipped: dict[str, str] = {}  # file name -> why it is not indexed (left in place)
        self._trust_version = trust.version
        for path in sorted(self.dir.glob("*.fart")):
            self._load(path)

    def _retry_skipped(self) -> None:
        """After a trust change (``fades keys trust`` on a running node), load again the files
        left in place for an untrusted signer: those now trusted are indexed, no restart."""
        self.trust.refresh()
        with self._lock:
            if self.trust.version == self._trust_version:
                return
            self._trust_version = self.trust.version
            retry = sorted(self.skipped)
            for name in retry:
                self.skipped.pop(name, None)
        for name in retry:
            path = self.dir / name
            if path.exists():
                self._load(path)
                if name not in self.skipped:
                    log.info("artifact file %s indexed after a trust change", name)

    # --- loading -----------------------------------------------------------------------------
    def _read(self, path: Path) -> Artifact:
        """Parse one file of the folder: bounded, and named by the digest it holds."""
        art = read_artifact(path, follow_symlinks=False)
        if art.digest.removeprefix("sha256:") != path.stem:
            raise ArtifactFormatError(
                f"artifact file {path.name} does not hold sha256:{path.stem} (altered)"
            )
        return art

    def _untrusted(self, art: Artifact) -> str | None:
        """Why a well-formed, signed artifact is not indexed here (and stays in place), if so."""
        if art.signature and art.signer and art.signer not in self.trust:
            return f"signed by key {art.signer}, which this node does not trust"
        return None

    def _load(self, path: Path) -> None:
        art: Artifact | None = None
        try:
            art = self._read(path)
            untrusted = self._untrusted(art)
            if untrusted:
                self.skipped[path.name] = untrusted
                log.warning("artifact file %s not indexed: %s", path.name, untrusted)
                return
            art.verify(self.trust)
        except FileNotFoundError:
            return  # moved away meanwhile (another process quarantined it)
        except Exception as exc:  # anything wrong with one file must not stop the rest
            self._quarantine(path, exc, art.name if art is not None else None)
            return
        with self._lock:
            self._index(art)
            if len(art.payload) <= _CACHE_PAYLOAD:
                self._verified[art.digest] = art

    def _index(self, art: Artifact) -> None:
        table = self._runtimes if art.kind == "runtime" else self._names
        key = art.abi if art.kind == "runtime" else art.name
        table.setdefault(key, {})[art.digest] = art.order_key

    def _indexed(self, digest: str) -> bool:
        return any(digest in v for t in (self._names, self._runtimes) for v in t.values())

    def _unindex(self, digest: str) -> None:
        with self._lock:
            self._verified.pop(digest, None)
            for table in (self._names, self._runtimes):
                for key, versions in list(table.items()):
                    if versions.pop(digest, None) is not None and not versions:
                        del table[key]

    def _quarantine(self, path: Path, exc: BaseException, name: str | None) -> Quarantined:
        """Move ``path`` into the quarantine folder with a note saying why; log it."""
        kind = exc.kind if isinstance(exc, ArtifactError) else type(exc).__name__
        reason = clean_text(" ".join(str(exc).split()) or kind, 500)
        self.quarantine_dir.mkdir(exist_ok=True)
        dest = self.quarantine_dir / f"{path.name}.{time.time_ns()}"
        item = Quarantined(path.name, dest, kind, reason, name, time.time())
        try:
            os.replace(path, dest)
        except FileNotFoundError:
            return item  # another process moved it first
        except OSError as move:
            log.warning("artifact file %s is bad (%s) and cannot be moved: %s", path, reason, move)
            self.skipped[path.name] = reason
            return item
        note = {"file": path.name, "kind": kind, "reason": reason, "name": name, "at": item.at}
        with contextlib.suppress(OSError):
            dest.with_name(dest.name + ".why").write_text(json.dumps(note))
        self.quarantined.append(item)
        log.warning("artifact file %s quarantined to %s: %s", path.name, dest, reason)
        return item

    def quarantine(self) -> list[Quarantined]:
        """Every file in this store's quarantine folder (newest first), with the reason."""
        out: list[Quarantined] = []
        if not self.quarantine_dir.is_dir():
            return out
        notes = sorted(self.quarantine_dir.glob("*.why"), key=lambda p: p.name, reverse=True)
        for note in notes[:_MAX_NOTES]:
            try:
                with note.open("rb") as f:
                    raw = json.loads(f.read(4096))
                out.append(
                    Quarantined(
                        file=clean_text(str(raw["file"]), 80),
                        path=note.with_suffix(""),
                        kind=clean_text(str(raw["kind"]), 40),
                        reason=clean_text(str(raw["reason"]), 500),
                        name=clean_text(str(raw["name"]), 64) if raw.get("name") else None,
                        at=float(raw.get("at", 0.0)),
                    )
                )
            except (OSError, ValueError, KeyError, TypeError, RecursionError):
                continue
        return sorted(out, key=lambda q: q.at, reverse=True)

    def _quarantine_note(self, digest: str) -> Quarantined | None:
        file = f"{digest.removeprefix('sha256:')}.fart"
        for q in [*reversed(self.quarantined), *self.quarantine()]:
            if q.file == file:
                return q
        return None

    # --- use ---------------------------------------------------------------------------------
    def add(self, data: bytes | Artifact) -> Artifact:
        """Verify and store an artifact. Returns it.

        Raises:
            ArtifactFormatError: malformed, or a rule broken (``ArtifactRejected``).
            SignatureError: unsigned, tampered, or signed by a key this node does not trust.
        """
        art = data if isinstance(data, Artifact) else parse(data)
        art.verify(self.trust)
        path = self.dir / f"{art.digest.removeprefix('sha256:')}.fart"
        with self._lock:
            if not (self._indexed(art.digest) and path.exists()):
                tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
                tmp.write_bytes(art.to_bytes())
                tmp.replace(path)
            self.skipped.pop(path.name, None)
            self._verified[art.digest] = art
            self._index(art)
        return art

    def resolve(self, ref: str) -> str:
        """Turn a function name or ``sha256:`` reference into a digest (the newest version)."""
        if ref.startswith("sha256:"):
            return ref
        self._retry_skipped()
        with self._lock:
            versions = self._names.get(ref)
            best = max(versions.items(), key=lambda kv: kv[1])[0] if versions else None
            known = ", ".join(sorted(self._names)) or "none"
        if best is None:
            for q in [*reversed(self.quarantined), *self.quarantine()]:
                if q.name == ref:
                    raise ArtifactQuarantined(
                        f"function {ref!r} is not usable on this node: its artifact file "
                        f"{q.file} was quarantined ({q.reason})"
                    )
            raise ArtifactError(f"no function named {ref!r} on this node (known: {known})")
        return best

    def get(self, ref: str) -> Artifact:
        """The verified artifact for a name or digest.

        A file that no longer verifies (altered at rest) is quarantined and refused.
        """
        digest = self.resolve(ref)
        with self._lock:
            art = self._verified.get(digest)
        if art is not None:
            return art
        path = self.dir / f"{digest.removeprefix('sha256:')}.fart"
        if not path.exists():
            q = self._quarantine_note(digest)
            if q is not None:
                raise ArtifactQuarantined(
                    f"artifact {digest} was quarantined on this node ({q.reason})"
                )
            raise ArtifactError(f"artifact {digest} is not on this node; upload it first")
        try:
            art = self._read(path)
        except FileNotFoundError:
            raise ArtifactError(f"artifact {digest} is not on this node; upload it first") from None
        except Exception as exc:
            self._unindex(digest)
            self._quarantine(path, exc, None)
            if isinstance(exc, ArtifactError):
                raise
            raise ArtifactFormatError(f"artifact file {path.name} is unreadable: {exc}") from exc
        untrusted = self._untrusted(art)
        try:
            art.verify(self.trust)  # untrusted: raises, and the file stays where it is
        except ArtifactError as exc:
            if not untrusted:
                self._unindex(digest)
                self._quarantine(path, exc, art.name)
            raise
        with self._lock:
            self._index(art)
            if len(art.payload) <= _CACHE_PAYLOAD:
                self._verified[digest] = art
        return art

    def runtime(self, abi: str = PYTHON_ABI) -> Artifact:
        """The newest verified runtime for ``abi``."""
        self._retry_skipped()
        with self._lock:
            versions = self._runtimes.get(abi)
            best = max(versions.items(), key=lambda kv: kv[1])[0] if versions else None
        if best is None:
            raise ArtifactError(
                f"this node holds no Python runtime ({abi}); add one with "
                "'fades fn runtime --key KEY' (or 'fades demo', which does it for you)"
            )
        return self.get(best)

    def runtimes(self, abi: str = PYTHON_ABI) -> list[str]:
        """The digests of the verified runtimes for ``abi``, newest first."""
        self._retry_skipped()
        with self._lock:
            versions = self._runtimes.get(abi, {})
            return [d for d, _ in sorted(versions.items(), key=lambda kv: kv[1], reverse=True)]

    def names(self) -> dict[str, str]:
        """Each function name and the digest of its newest verified version."""
        self._retry_skipped()
        with self._lock:
            return {
                n: max(v.items(), key=lambda kv: kv[1])[0] for n, v in sorted(self._names.items())
            }


def read_artifact(path: str | Path, *, follow_symlinks: bool = True) -> Artifact:
    """Read and parse an artifact file, bounded: a regular file of at most MAX_ARTIFACT_BYTES,
    checked before it is read (``fn add`` of a 10 GB file or of ``/dev/zero`` is one error).

    Raises:
        ArtifactFormatError: not a regular file, too large, unreadable or malformed.
        FileNotFoundError: there is no such file.
    """
    p = Path(path)
    st = p.stat() if follow_symlinks else p.lstat()
    if not stat.S_ISREG(st.st_mode):
        raise ArtifactFormatError(f"artifact file {p.name} is not a regular file")
    if st.st_size > MAX_ARTIFACT_BYTES:
        raise ArtifactRejected(
            f"artifact file {p.name} has {st.st_size} bytes; an artifact is at most "
            f"{MAX_ARTIFACT_BYTES}",
            field="size",
        )
    try:
        with p.open("rb") as f:
            data = f.read(MAX_ARTIFACT_BYTES + 1)
    except IsADirectoryError:
        raise ArtifactFormatError(f"artifact file {p.name} is not a regular file") from None
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ArtifactFormatError(f"cannot read artifact file {p}: {exc.strerror}") from None
    return parse(data)
