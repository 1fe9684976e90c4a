"""One stateful task's side of its checkpoints: claim, restore, save per policy, release.

Used by the persistent loop (:mod:`fades.node.persistent`). At start it claims the task's
lease (fencing out any earlier instance) and loads the newest checkpoint; after each
invocation it captures the sandbox's state when the task's policy says so (and always after
the first invocation of a run, so a function whose state cannot be captured fails at once,
naming the global); before each invocation it checks that its lease is still current; on a
clean stop it saves what is newer than the last checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from fades.errors import FabricError, Fenced
from fades.retry import retrying_sync
from fades.sandbox.base import Session
from fades.state.base import Checkpoint, Checkpoints, Lease
from fades.task import StateSpec

_T = TypeVar("_T")

log = logging.getLogger("fades.state")

#: seconds a stateful task keeps trying to claim its lease and load its checkpoint while the
#: fabric does not answer (a hub server restarting, a site's uplink cut) before it fails
START_RETRY_S = 180.0
#: seconds the release of a finished task's checkpoint keeps trying
RELEASE_RETRY_S = 30.0


def _retry(what: str, step: Callable[[], _T], within: float, stop: Callable[[], bool]) -> _T:
    """``step()`` again (backoff 0.25 s doubling to 5 s) while it raises FabricError, for up to
    ``within`` seconds or until ``stop()``; then the last FabricError is raised."""
    return retrying_sync(what, step, log, within, cap=5.0, errors=(FabricError,), stop=stop)


@dataclass(slots=True)
class Costs:
    """What checkpointing cost this run: count, seconds (capture + store), last state size."""

    saves: int = 0
    capture_s: float = 0.0
    store_s: float = 0.0
    state_bytes: int = 0
    history: list[float] = field(default_factory=list)


class StateKeeper:
    """The checkpoints of one stateful task on this node."""

    def __init__(
        self, store: Checkpoints, task_id: str, node: str, digest: str, spec: StateSpec
    ) -> None:
        self.store, self.task_id, self.node, self.digest, self.spec = (
            store,
            task_id,
            node,
            digest,
            spec,
        )
        self.lease: Lease | None = None
        #: the newest saved state (what a crashed instance is reopened from)
        self.state: bytes | None = None
        self.saved_seq = 0
        self.saved_at = time.monotonic()
        self.first = True
        self.costs = Costs()

    def start(self, stop: Callable[[], bool] = lambda: False) -> Checkpoint | None:
        """Claim the lease and load the newest checkpoint (None: start fresh). While the
        fabric does not answer it tries again for up to :data:`START_RETRY_S` seconds (or
        until ``stop()``): a hub server restarting must not fail the task.

        Raises:
            CheckpointRejected: the stored checkpoint fails its checks.
            FabricError: the fabric did not answer for :data:`START_RETRY_S` seconds.
        """
        what = f"task {self.task_id}: claiming its lease"
        self.lease = _retry(
            what, lambda: self.store.claim(self.task_id, self.node), START_RETRY_S, stop
        )
        ckpt = _retry(
            f"task {self.task_id}: loading its checkpoint",
            lambda: self.store.load(self.task_id, digest=self.digest),
            START_RETRY_S,
            stop,
        )
        if ckpt is not None:
            self.state, self.saved_seq = ckpt.state, ckpt.seq
            log.info("task %s: restoring its checkpoint at seq %d", self.task_id, ckpt.seq)
        self.saved_at = time.monotonic()
        return ckpt

    def check(self) -> None:
        """Raise Fenced now if another instance has claimed the task since our last write
        (checked before each invocation, so a stale instance stops before it runs one, whatever
        its checkpoint policy). A store that cannot say (or a fabric that does not answer) lets
        the next save decide."""
        owner = getattr(self.store, "owner", None)
        if self.lease is None or owner is None:
            return
        try:
            current = owner(self.task_id)
        except FabricError as exc:
            log.warning("task %s: lease not checked: %s", self.task_id, exc)
            return
        if current is None or current[1] != self.lease.token:
            holder = f"node {current[0]}" if current else "nobody (the task was released)"
            raise Fenced(
                f"task moved: another instance holds it ({holder}); node {self.node}'s lease "
                f"{self.lease.token} is stale",
                task_id=self.task_id,
                node=self.node,
            )

    def due(self, seq: int) -> bool:
        """Whether a checkpoint is due now that ``seq`` invocations are done."""
        if self.first:
            return True
        return self.spec.due(seq - self.saved_seq, time.monotonic() - self.saved_at)

    def save(self, session: Session, seq: int) -> float:
        """Capture ``session`` (``seq`` invocations done) and store it; returns the seconds it
        took.

        Raises:
            StateNotCapturable, StateError: from the capture; Fenced: the task moved.
        """
        assert self.lease is not None, "start() first"
        t0 = time.perf_counter()
        state = session.snapshot()
        t1 = time.perf_counter()
        ckpt = Checkpoint(self.task_id, self.digest, self.node, seq, state, time.time())
        self.lease = self.store.save(self.lease, ckpt)
        t2 = time.perf_counter()
        self.state, self.saved_seq, self.saved_at, self.first = state, seq, time.monotonic(), False
        c = self.costs
        c.saves += 1
        c.capture_s += t1 - t0
        c.store_s += t2 - t1
        c.state_bytes = len(state)
        if len(c.history) < 10_000:
            c.history.append(t2 - t0)
        return t2 - t0

    def release(self) -> None:
        """The task ended: forget its checkpoint."""
        if self.lease is not None:
            lease = self.lease
            try:
                _retry(
                    f"task {self.task_id}: releasing its checkpoint",
                    lambda: self.store.release(lease),
                    RELEASE_RETRY_S,
                    lambda: False,
                )
            except FabricError as exc:  # the outcome matters more than the leftover
                log.warning("task %s: checkpoint not released: %s", self.task_id, exc)
            self.lease = None
