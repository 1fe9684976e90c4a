"""Who may publish which function names, and which version is current.

* A function name belongs to the tenant that first published it; another tenant's upload
  under that name is refused (:class:`~fades.errors.NameTaken`, HTTP 403). Runtimes are named
  by their ABI (``runtime:<abi>``) and owned the same way.
* An upload older than the current version (its signed ``created`` is earlier, or it is a
  version the repository already held before the current one: a replay) is refused
  (:class:`~fades.errors.RollbackRefused`, HTTP 409) unless the upload asks for it with
  ``allow_rollback``. Re-uploading the current version is harmless.

A name the repository holds but this controller has no owner for (a fresh controller on an
existing fabric) is adopted by the first tenant that publishes it here.
"""

from __future__ import annotations

from fades.controller.store import ControllerStore, FunctionOwner
from fades.errors import NameTaken, RollbackRefused
from fades.functions.artifact import Artifact


def name_of(art: Artifact) -> str:
    """The namespace key of an artifact: its name, or ``runtime:<abi>`` for a runtime."""
    return f"runtime:{art.abi}" if art.kind == "runtime" else art.name


def created_of(art: Artifact) -> float:
    """The signed creation time of an artifact (0 when absent or not a number)."""
    raw = art.manifest.get("created")
    return float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else 0.0


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
    if created_of(art) < cur.created or known:
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
    store.set_function(name, owner, art.digest, created_of(art))
