"""What a stateful task's checkpoints are, and the store interface every backend provides.

A checkpoint is the state a sandbox produced at an invocation boundary, bound to the task, the
digest of the function that wrote it and the number of invocations it covers. A lease is the
right to be the one live instance of a stateful task: its ``token`` is the store's revision
of the task's record (the KV revision for :mod:`fades.state.kv`), and a write made with a
token that is no longer current is refused with :class:`fades.errors.Fenced`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One captured state of a stateful task."""

    task_id: str
    digest: str
    node: str
    #: invocations completed when captured (the next invocation is number ``seq``)
    seq: int
    #: the captured state, as produced inside the sandbox
    state: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to be the one live instance of a stateful task."""

    task_id: str
    node: str
    #: the store's revision of the task's record when this lease was taken or last written
    token: int


class Checkpoints(Protocol):
    """Where a stateful task's checkpoints live. Synchronous: called from orchestrator threads."""

    def claim(self, task_id: str, node: str) -> Lease:
        """Become the live instance: takes over from any previous owner and bumps the token,
        so the previous owner's next :meth:`save` is fenced."""
        ...

    def save(self, lease: Lease, ckpt: Checkpoint) -> Lease:
        """Store ``ckpt`` as the task's newest checkpoint; returns the lease to use next.

        Raises:
            fades.errors.Fenced: another claim happened since ``lease``.
            fades.errors.StateError: the state is larger than the store allows.
        """
        ...

    def load(self, task_id: str, *, digest: str) -> Checkpoint | None:
        """The task's newest checkpoint (None: there is none yet).

        Raises:
            fades.errors.CheckpointRejected: the integrity check fails, or another function
                (``digest``) wrote it.
        """
        ...

    def release(self, lease: Lease) -> None:
        """The task ended: forget its record (a no-op if another instance holds it now)."""
        ...
