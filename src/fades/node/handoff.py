"""Handing a running stateful task from one node to another: the node-local half.

The controller drives a live migration (:mod:`fades.controller.migrate`) over the nodes'
control subjects (:mod:`fades.node.agent.migrate`); this module is what those requests and the
persistent-task loop (:mod:`fades.node.persistent`) share inside one node:

* **arriving** (target): a warm sandbox session opened before the task comes, handed to the
  loop when it starts the task, and the first output after the restore, which the controller
  waits for (downtime ends there);
* **departing** (source): a request that the loop stop at its next invocation boundary, write
  a final checkpoint and leave the task ``moved`` (no outcome is sent: the task lives on
  elsewhere); the loop answers with the sequence number it stopped at.

A task left ``moved`` is neither active (not resumed on restart) nor finished (the outbox
sends nothing for it). A task that arrives back on a node it once left is re-activated.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fades.node.orchestrator import Orchestrator
    from fades.node.taskstore import TaskStore
    from fades.sandbox.base import Session
    from fades.state.keeper import StateKeeper
    from fades.task import Task

log = logging.getLogger("fades.node")

#: the local status of a task that now runs on another node
MOVED = "moved"
#: a task asked to leave whose next invocation is due within this many seconds runs it
#: first, then leaves at once (so the gap its move makes is the hand-over alone)
DEPART_NEXT_S = 0.1


@dataclass(slots=True)
class Departure:
    """A request that a running task leave this node at its next invocation boundary."""

    to: str
    requested_at: float = field(default_factory=time.time)
    asked: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    #: invocations completed when it stopped (the target continues at this seq)
    seq: int | None = None
    #: wall-clock end of the last invocation here (None: none ran in this run)
    last_output_at: float | None = None
    state_bytes: int = 0
    error: str | None = None


@dataclass(slots=True)
class Arrival:
    """A task about to arrive: its warm session, and its first output once restored."""

    session: Session | None
    #: the task, validated when the session was prepared
    task: Task | None = None
    prepared_at: float = field(default_factory=time.time)
    first: threading.Event = field(default_factory=threading.Event)
    #: the first invocation's seq here and when it ended (wall clock)
    first_seq: int | None = None
    first_output_at: float | None = None
    error: str | None = None


class Handoffs:
    """Migrations in flight on one node (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.departures: dict[str, Departure] = {}
        self.arrivals: dict[str, Arrival] = {}
        #: last output (seq, wall clock) per running task: what a departure reports
        self._last: dict[str, tuple[int, float]] = {}

    # --- source ------------------------------------------------------------------------------
    def depart(self, task_id: str, to: str) -> Departure:
        with self._lock:
            dep = self.departures.get(task_id)
            if dep is None or dep.done.is_set():
                dep = self.departures[task_id] = Departure(to)
            return dep

    def leaving(self, task_id: str) -> bool:
        """True if the loop of ``task_id`` should stop at this boundary."""
        dep = self.departures.get(task_id)
        return dep is not None and not dep.done.is_set()

    def leave_now(self, task_id: str, delay: float) -> bool:
        """True if the loop should stop now rather than run its next invocation, due in
        ``delay`` seconds: it runs one more first when that one is due soon."""
        dep = self.departures.get(task_id)
        if dep is None or dep.done.is_set():
            return False
        return delay > DEPART_NEXT_S or time.monotonic() - dep.asked > DEPART_NEXT_S

    def departed(
        self, task_id: str, seq: int, *, state_bytes: int = 0, error: str | None = None
    ) -> None:
        """The loop stopped (final checkpoint written, unless ``error``)."""
        with self._lock:
            dep = self.departures.get(task_id)
            last = self._last.pop(task_id, None)
        if dep is None:
            return
        dep.seq = seq
        dep.state_bytes = state_bytes
        dep.error = error
        dep.last_output_at = last[1] if last is not None else None
        dep.done.set()

    def forget_departure(self, task_id: str) -> None:
        with self._lock:
            self.departures.pop(task_id, None)

    # --- target ------------------------------------------------------------------------------
    def prepare(self, task_id: str, session: Session | None, task: Task | None = None) -> Arrival:
        """Keep ``session`` warm for ``task_id`` (closing one prepared before)."""
        with self._lock:
            old = self.arrivals.pop(task_id, None)
            arr = self.arrivals[task_id] = Arrival(session, task)
        if old is not None and old.session is not None:
            old.session.close()
        return arr

    def arrival(self, task_id: str) -> Arrival | None:
        return self.arrivals.get(task_id)

    def take_session(self, task_id: str, state: bytes | None = None) -> Session | None:
        """The warm session prepared for ``task_id`` (once), with ``state`` restored into it;
        None if there is none (or the restore failed: the caller opens a session and sees
        why)."""
        with self._lock:
            arr = self.arrivals.get(task_id)
            if arr is None or arr.session is None:
                return None
            session, arr.session = arr.session, None
        if state is not None:
            try:
                session.restore(state)
            except Exception as exc:
                log.warning("task %s: restore into the warm session failed: %s", task_id, exc)
                session.close()
                return None
        return session

    def cancel_arrival(self, task_id: str) -> None:
        with self._lock:
            arr = self.arrivals.pop(task_id, None)
        if arr is not None and arr.session is not None:
            arr.session.close()

    # --- both --------------------------------------------------------------------------------
    def output(self, task_id: str, seq: int, at: float | None = None) -> None:
        """The loop finished invocation ``seq`` of ``task_id`` (called after each success)."""
        at = time.time() if at is None else at
        with self._lock:
            self._last[task_id] = (seq, at)
            arr = self.arrivals.get(task_id)
        if arr is not None and not arr.first.is_set():
            arr.first_seq, arr.first_output_at = seq, at
            arr.first.set()

    def stopped(self, task_id: str, error: str) -> None:
        """The loop ended without a first output here (wakes a waiting arrival)."""
        leaving = self.leaving(task_id)
        with self._lock:
            arr = self.arrivals.get(task_id)
            if not leaving:  # a departure reports the last output, then forgets it
                self._last.pop(task_id, None)
        if arr is not None and not arr.first.is_set():
            arr.error = error
            arr.first.set()

    def close(self) -> None:
        with self._lock:
            arrivals, self.arrivals = self.arrivals, {}
        for arr in arrivals.values():
            if arr.session is not None:
                arr.session.close()


_ATTACH = threading.Lock()


def handoffs(orc: Orchestrator) -> Handoffs:
    """The :class:`Handoffs` of one orchestrator (created on first use)."""
    h: Handoffs | None = getattr(orc, "_handoffs", None)
    if h is None:
        with _ATTACH:
            h = getattr(orc, "_handoffs", None)
            if h is None:
                h = Handoffs()
                orc._handoffs = h  # type: ignore[attr-defined]
    return h


def taken_elsewhere(orc: Orchestrator, task: Task, status: str) -> bool:
    """True (and the task left ``moved``) if another node holds the lease of a stateful
    task this node was not asked to take: it moved while this node was away."""
    if handoffs(orc).arrival(task.id) is not None:
        return False  # arriving: the claim is ours to make
    owner_of = getattr(orc.checkpoints, "owner", None)
    if owner_of is None:
        return False
    try:
        owner = owner_of(task.id)
    except Exception as exc:  # the fabric is away: the claim decides
        log.warning("task %s: cannot see who holds it: %s", task.id, exc)
        return False
    if owner is None or owner[0] == orc.node_name:
        return False
    mark_moved(orc.store, task.id, f"node {owner[0]} took it over while this node was away")
    log.warning("task %s (%s) now runs on node %s; not resumed here", task.id, status, owner[0])
    return True


def left(
    orc: Orchestrator,
    task: Task,
    seq: int,
    why: str,
    *,
    keeper: StateKeeper | None = None,
    error: str | None = None,
) -> None:
    """The persistent loop of ``task`` ended because it moved (asked to, or fenced)."""
    hand = handoffs(orc)
    if keeper is not None and error is None and keeper.saved_seq < seq:
        # the final checkpoint was not written (the fabric is away): stay, and resume here
        hand.departed(task.id, seq, error="its final checkpoint could not be saved; it stays")
        orc.queue.put(task)
        return
    mark_moved(orc.store, task.id, why)
    state = keeper.state if keeper is not None else None
    hand.departed(task.id, seq, state_bytes=len(state or b""), error=error)
    log.info("task %s left this node after %d invocation(s): %s", task.id, seq, why)


def mark_moved(store: TaskStore, task_id: str, why: str) -> None:
    """Leave ``task_id`` ``moved`` here: not resumed, no outcome sent from this node."""
    store._exec(
        "UPDATE tasks SET status=?, finished_at=?, error=? WHERE id=? "
        "AND status NOT IN ('done', 'failed')",
        (MOVED, time.time(), why[:4000], task_id),
    )


def reactivate(store: TaskStore, task_id: str) -> bool:
    """A task that once left this node (``moved``, or stopped ``Fenced``) comes back:
    ``accepted`` again. False if it is neither here."""
    cur = store._exec(
        "UPDATE tasks SET status='accepted', finished_at=NULL, error=NULL, error_kind=NULL, "
        "attempts=0, delivered=0 WHERE id=? AND (status=? OR (status='failed' AND "
        "error_kind='Fenced'))",
        (task_id, MOVED),
    )
    return bool(cur.rowcount)


def summary(dep: Departure) -> dict[str, Any]:
    return {
        "seq": dep.seq,
        "last_output_at": dep.last_output_at,
        "state_bytes": dep.state_bytes,
        "error": dep.error,
    }
