"""Who may publish which function names, and which version is current.

* A function name belongs to the tenant that first published it; another tenant's upload
  under that name is refused (:class:`~fades.errors.NameTaken`, HTTP 403). Runtimes are named
  by their ABI (``runtime:<abi>``) and owned the same way.
* An upload older than the current version (earlier in the repository's version order,
  build time then digest; or a version the repository already held: a replay) is refused
  (:class:`~fades.errors.RollbackRefused`, HTTP 409) unless the upload asks for it with
  ``allow_rollback``. Re-uploading the current version is harmless.

A name the repository holds but this controller has no owner for (a fresh controller on an
existing fabric) is adopted by the first tenant that publishes it here.

:class:`Publisher` is the controller's desk for functions: upload (verify, check, put),
list, and :meth:`Publisher.pin` (a task's function name to the digest that will run).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fades.aiostop import wait_for
from fades.controller.models import FunctionInfo
from fades.controller.signers import check_signer
from fades.controller.store import ControllerStore, FunctionOwner
from fades.errors import (
    ArtifactError,
    FabricError,
    FadesError,
    NameTaken,
    RollbackRefused,
    SignatureError,
)
from fades.fabric.protocol import NodeInfo
from fades.fabric.repository import ArtifactRepository, order_key
from fades.functions.artifact import Artifact, parse
from fades.functions.keys import TrustStore
from fades.functions.store import FunctionStore

log = logging.getLogger("fades.controller")

#: seconds to wait for the function repository before falling back on the local store
REPOSITORY_TIMEOUT_S = 2.0


def name_of(art: Artifact) -> str:
    """The namespace key of an artifact: its name, or ``runtime:<abi>`` for a runtime."""
    return f"runtime:{art.abi}" if art.kind == "runtime" else art.name


def version_of(art: Artifact) -> tuple[int, str]:
    """The artifact's place in its name's version order (the repository's own order)."""
    return order_key(art)


def check_publish(
    store: ControllerStore,
    art: Artifact,
    tenant: str | None,
    *,
    known: bool,
    allow_rollback: bool = False,
) -> FunctionOwner | None:
    """Refuse an upload that is not ``tenant``'s to make, returns the current owner record.

    Args:
        known: the repository already holds this exact digest.

    Raises:
        NameTaken: another tenant owns the name.
        RollbackRefused: the upload is older than the current version.
    """
    name = name_of(art)
    cur = store.function_owner(name)
    if cur is None:
        return None
    if tenant is not None and cur.owner not in ("", tenant):
        raise NameTaken(
            f"function name {name!r} belongs to tenant {cur.owner!r}; publish under a name "
            "of your own"
        )
    if cur.digest == art.digest or allow_rollback:
        return cur
    if version_of(art) < (cur.created_ns, cur.digest) or known:
        raise RollbackRefused(
            f"{name!r} {art.digest} is older than the current version {cur.digest}; "
            "upload with allow_rollback=true to make it current again"
        )
    return cur


def record_publish(store: ControllerStore, art: Artifact, tenant: str | None) -> None:
    """Make ``art`` the current version of its name (owned by ``tenant`` if new)."""
    name = name_of(art)
    cur = store.function_owner(name)
    owner = cur.owner if cur is not None and cur.owner else (tenant or "")
    store.set_function(name, owner, art.digest, version_of(art)[0])


class Publisher:
    """Uploads, lists and pins functions for one controller.

    Args:
        trusted: the folder of keys uploads must be signed with (re-read on every upload).
        functions: the controller's verified local store (the cloud path's artifacts).
        store: the controller's database (name owners).
        repository: the repository, once the controller is connected.
        connected: whether the fabric is reachable now.
    """

    def __init__(
        self,
        trusted: Path,
        functions: FunctionStore,
        store: ControllerStore,
        repository: ArtifactRepository,
        connected: Callable[[], bool],
    ) -> None:
        self.trusted = trusted
        self.functions = functions
        self.store = store
        self.repository = repository
        self.connected = connected
        #: the registry entries of the nodes that are up (set by the controller)
        self.up_nodes: Callable[[], list[NodeInfo]] = list
        #: records ``art`` as its name's current version (the controller sets it to a write
        #: through its log, fades.controller.replica)
        self.record: Callable[[Artifact, str | None], Awaitable[Any]] = lambda art, tenant: (
            asyncio.to_thread(record_publish, self.store, art, tenant)
        )

    async def pin(self, ref: str) -> str:
        """The digest ``ref`` names now (ArtifactError, HTTP 404: no such function).

        While the repository is unreachable (NATS down), a function this controller holds
        verified is pinned from its own store: the task waits in controller.db and is
        dispatched later.
        """
        try:
            if not self.connected():
                raise FabricError("not connected to NATS")
            digest = await wait_for(self.repository.resolve(ref), REPOSITORY_TIMEOUT_S)
            await wait_for(self.repository.record(digest), REPOSITORY_TIMEOUT_S)
            return digest
        except ArtifactError:
            raise ArtifactError(
                f"unknown function {ref!r}: the repository holds no such artifact; "
                "upload it first (POST /v1/functions or 'fades fn upload')"
            ) from None
        except (FabricError, TimeoutError) as exc:  # the fabric is unreachable or slow
            problem = f"{type(exc).__name__}: {exc}".rstrip(": ")
        try:
            return (await asyncio.to_thread(self.functions.get, ref)).digest
        except ArtifactError:
            raise FabricError(
                f"cannot check function {ref!r}: the function repository is unreachable "
                f"({problem}); try again when NATS is back"
            ) from None

    async def list(self) -> list[FunctionInfo]:
        """Artifacts in the repository, newest first (FabricError: unreachable)."""
        try:
            records = await wait_for(self.repository.list(), REPOSITORY_TIMEOUT_S)
        except FadesError:
            raise
        except TimeoutError as exc:
            raise FabricError("the function repository did not answer in time") from exc
        return [FunctionInfo(**r.to_dict()) for r in records]

    async def upload(
        self, data: bytes, *, tenant: str | None = None, allow_rollback: bool = False
    ) -> FunctionInfo:
        """Verify an artifact against the trusted keys and put it in the repository.

        Raises:
            ArtifactFormatError: not a fades artifact.
            SignatureError: unsigned, tampered, or signed by a key the controller does not trust.
            NameTaken: the name belongs to another tenant.
            RollbackRefused: older than the current version, without ``allow_rollback``.
        """
        art = await asyncio.to_thread(parse, data)
        trust = await asyncio.to_thread(TrustStore.from_dir, self.trusted)
        trust.holder = "the controller"
        self.functions.trust = trust
        try:
            art.verify(trust)
        except SignatureError as exc:
            hint = ""
            if art.signer and art.signer not in trust:
                hint = (
                    f"; to trust the signer, run 'fades keys trust KEY.pub --home "
                    f"{self.trusted.parent}' (it copies the public key into {self.trusted}), "
                    "and the same with each node's --home"
                )
            raise SignatureError(f"upload refused: {exc}{hint}") from None
        warnings = check_signer(art.signer, self.up_nodes())
        try:
            await self.repository.record(art.digest)
            known = True
        except ArtifactError:
            known = False
        await asyncio.to_thread(
            check_publish, self.store, art, tenant, known=known, allow_rollback=allow_rollback
        )
        rec = await self.repository.put(art, rollback=allow_rollback)
        await self.record(art, tenant)
        await asyncio.to_thread(self.functions.add, art)  # ready for the cloud path
        log.info("uploaded %s function %s %s", art.kind, art.name, art.digest)
        return FunctionInfo(**rec.to_dict(), warnings=warnings)
