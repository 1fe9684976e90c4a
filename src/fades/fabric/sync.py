"""Artifact download, in one place: bring a function (and the runtime it needs) from the
repository into a local :class:`~fades.functions.store.FunctionStore`.

Used by the node agent (before it submits a task) and the controller's cloud runner. The
store verifies every artifact against its own trust store on the way in
(:meth:`FunctionStore.add`), and again whenever it reads one back: a repository is storage,
not a root of trust, so a tampered or untrusted artifact fails here with ``SignatureError``
(or ``ArtifactFormatError``) and is never installed.

Blocking work (hashing, signature checks, file writes) runs in a thread; one lock keeps
concurrent tasks from downloading the same (large) runtime twice.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable

from fades.errors import ArtifactError, ArtifactFormatError, SignatureError
from fades.fabric.repository import ArtifactRepository
from fades.functions.artifact import PYTHON_ABI, Artifact
from fades.functions.store import FunctionStore

log = logging.getLogger("fades.fabric.sync")

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")

Keepalive = Callable[[], Awaitable[None]]


class ArtifactSync:
    """Fetch verified artifacts from ``repo`` into ``store``.

    Args:
        repo: the repository (on the Bus).
        store: the local, verifying function store.
        who: for log lines (a node name, ``controller``).
    """

    def __init__(self, repo: ArtifactRepository, store: FunctionStore, who: str = "") -> None:
        self.repo = repo
        self.store = store
        self.who = who
        self._lock = asyncio.Lock()

    def held(self, digest: str) -> Artifact | None:
        """The local artifact with ``digest`` (verified), or None if this store lacks it."""
        if not (self.store.dir / f"{digest.removeprefix('sha256:')}.fart").exists():
            return None
        return self.store.get(digest)

    async def resolve(self, ref: str) -> str | None:
        """A name or digest to the repository's digest; None if the repository lacks the name
        (a function installed on this machine only)."""
        if DIGEST.match(ref):
            return ref
        try:
            return await self.repo.resolve(ref)
        except ArtifactError:
            return None

    async def artifact(self, digest: str, keepalive: Keepalive | None = None) -> Artifact:
        """The verified artifact ``digest``, downloaded if missing, plus its runtime.

        ``keepalive`` is awaited before a download (e.g. to extend a message's ack deadline).

        Raises:
            ArtifactError: the repository lacks it; SignatureError / ArtifactFormatError: it
            is tampered with or signed by a key this store does not trust.
            FabricError: the repository is unreachable.
        """
        if not DIGEST.match(digest):
            raise ValueError(f"not a sha256: digest: {digest!r}")
        art = await self._local(digest, keepalive)
        if art.kind == "python" and not self.store.runtimes(PYTHON_ABI):
            # only when none is held: loading one verifies its ~20 MB (tens of ms) each time
            await self.runtime(PYTHON_ABI, keepalive)
        return art

    async def runtime(self, abi: str = PYTHON_ABI, keepalive: Keepalive | None = None) -> Artifact:
        """A runtime for ``abi``: the one held here, else the repository's newest."""
        try:
            return await asyncio.to_thread(self.store.runtime, abi)
        except (SignatureError, ArtifactFormatError):
            raise  # a runtime is held but bad: do not paper over it with a download
        except ArtifactError:
            pass
        try:
            digest = await self.repo.runtime_digest(abi)
        except ArtifactError:
            return await asyncio.to_thread(self.store.runtime, abi)  # raises, naming the ABI
        return await self._local(digest, keepalive)

    async def _local(self, digest: str, keepalive: Keepalive | None) -> Artifact:
        art = await asyncio.to_thread(self.held, digest)
        if art is not None:
            return art
        async with self._lock:
            art = await asyncio.to_thread(self.held, digest)
            if art is not None:
                return art  # another task fetched it meanwhile
            if keepalive is not None:
                await keepalive()
            data = await self.repo.get(digest)
            art = await asyncio.to_thread(self.store.add, data)
        log.info("%s: fetched %s %s (%s) from the repository", self.who, art.kind, art.name, digest)
        return art
