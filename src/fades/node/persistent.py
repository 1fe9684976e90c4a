"""A persistent task's life on a node: one live sandbox instance invoked every ``period_s``.

It runs until a bound is reached (the task's ``invocations`` or ``max_duration_s``, the node's
``max_persistent_seconds``, counted from acceptance so the bound holds across restarts), until
it is cancelled (in this process, or by a request another process recorded in ``tasks.db``),
or until the node shuts down (then it stays ``running`` and resumes on the next start).
Part of the orchestrator, kept apart because it is the one long-lived loop.

A stateful task (``function.state``) claims its lease at start, restores its newest
checkpoint and continues the invocation sequence from it, checkpoints per its policy
(:class:`fades.state.keeper.StateKeeper`), saves once more on a clean stop, and stops with
kind ``Fenced`` ("task moved: another instance holds it") when another instance claimed it.
After its own instance crashes, it is reopened from the last checkpoint.

Moving (:mod:`fades.node.handoff`): a task asked to leave stops at an invocation boundary,
saves its final checkpoint and is left ``moved`` (no outcome is sent from here; it lives on
elsewhere); an arriving task starts in the warm session prepared for it. A resumed task
whose lease another node holds now is left ``moved`` without running.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from fades.errors import (
    CheckpointRejected,
    FabricError,
    FadesError,
    Fenced,
    SandboxError,
    StateEnded,
    StateError,
    TaskCancelled,
)
from fades.node.handoff import MOVED, handoffs, left, mark_moved, taken_elsewhere
from fades.sandbox.base import Limits, Session
from fades.state.keeper import StateKeeper

if TYPE_CHECKING:
    from fades.node.orchestrator import Orchestrator
    from fades.task import Task

log = logging.getLogger("fades.node")

#: How often a waiting persistent task looks for a cancel request from another process.
_CANCEL_POLL_S = 1.0


def run_persistent(orc: Orchestrator, task: Task) -> None:
    """Keep one instance alive and invoke it every ``period_s`` until a bound is reached
    (``invocations``, ``max_duration_s``, the node's ``max_persistent_seconds``) or it is
    cancelled."""
    rec = orc.store.get(task.id)
    if rec.done or rec.status == MOVED or orc._late(task):
        return
    hand = handoffs(orc)
    if task.function.state is not None and taken_elsewhere(orc, task, rec.status):
        return
    orc.store.start(task.id)
    spec = task.function
    assert spec.period_s is not None
    lifetime, bound = orc.limits.max_persistent_seconds, "max_persistent_seconds"
    if spec.max_duration_s is not None and spec.max_duration_s <= lifetime:
        lifetime, bound = spec.max_duration_s, "max_duration_s"
    end_at = rec.accepted_at + lifetime  # wall clock: the bound holds across restarts
    # (a stateful task's sequence comes from its checkpoint: do not read every invocation)
    seq = len(orc.store.invocations(task.id)) if spec.state is None else 0
    artifact = orc.functions.get(spec.artifact)
    keeper: StateKeeper | None = None
    if spec.state is not None:
        keeper = StateKeeper(orc.checkpoints, task.id, orc.node_name, artifact.digest, spec.state)
        try:
            ckpt = keeper.start(stop=orc._stop.is_set)
        except StateEnded as exc:  # finished elsewhere before this failover reached us
            mark_moved(orc.store, task.id, str(exc))
            log.warning("task %s: not run here: %s", task.id, exc)
            return
        except FadesError as exc:
            orc.store.fail(task.id, exc.kind, f"the stateful task cannot start: {exc}")
            return
        seq = ckpt.seq if ckpt is not None else 0  # what came after it is done again
    session: Session | None = None
    last: Any = None
    failures = 0
    stopped: str | None = None
    fatal: FadesError | None = None
    next_at = time.monotonic()
    try:
        while True:
            with orc._wake:  # sleep until the next period, a cancel or a shutdown
                while (
                    not orc._stop.is_set()
                    and task.id not in orc._cancelled
                    and (delay := next_at - time.monotonic()) > 0
                    and not hand.leave_now(task.id, delay)
                ):
                    orc._wake.wait(min(delay, _CANCEL_POLL_S))
                    if orc._cancel_requested(task.id):
                        break
                else:
                    orc._cancel_requested(task.id)
            if orc._stop.is_set() or task.id in orc._cancelled:
                break
            if hand.leave_now(task.id, next_at - time.monotonic()):
                break
            if spec.invocations is not None and seq >= spec.invocations:
                stopped = "invocations"
                break
            if time.time() >= end_at:
                stopped = bound
                break
            next_at = time.monotonic() + spec.period_s
            if keeper is not None:
                try:
                    keeper.check()  # a stale instance stops before it runs one more
                except Fenced as exc:
                    fatal = exc
                    break
            t0 = time.perf_counter()
            try:
                blob, fetch_t, _ = orc._fetch(task)
                if session is None:
                    session = hand.take_session(task.id, keeper.state if keeper else None)
                if session is None:
                    session = orc.sandboxes.open(
                        artifact,
                        Limits(spec.memory_mib, spec.time_budget_ms),
                        restore=keeper.state if keeper is not None else None,
                    )
                res = session.invoke(blob)
            except StateError as exc:  # the checkpoint cannot be restored into this function
                fatal = exc
                break
            except FadesError as exc:
                failures += 1
                orc.store.record_invocation(task.id, seq, ok=False, error=f"{exc.kind}: {exc}")
                if isinstance(exc, SandboxError) and session is not None:
                    session.close()  # a trapped instance cannot be re-entered
                    session = None
                seq += 1
                continue
            timing = {
                "retrieval": fetch_t["retrieval"],
                "transfer": fetch_t["encode"] + res.timing["transfer"],
                "start": res.timing["start"],
                "compute": res.timing["compute"],
                "result": res.timing["result"],
                "total": time.perf_counter() - t0,
            }
            orc.store.record_invocation(task.id, seq, ok=True, result=res.value, timing=timing)
            hand.output(task.id, seq)
            last = res.value
            seq += 1
            if keeper is not None and keeper.due(seq):
                try:
                    timing["checkpoint"] = keeper.save(session, seq)
                except FabricError as exc:  # the fabric is away: try again next time
                    log.warning("task %s: checkpoint at seq %d not saved: %s", task.id, seq, exc)
                    continue
                except (StateError, SandboxError) as exc:
                    fatal = exc
                    break
                orc.store.record_invocation(
                    task.id, seq - 1, ok=True, result=res.value, timing=timing
                )
            if hand.leaving(task.id):
                break  # asked to move: leave right after this invocation
        if keeper is not None and fatal is None and session is not None and seq > keeper.saved_seq:
            try:  # a clean stop: nothing is done twice after it
                keeper.save(session, seq)
            except FadesError as exc:
                fatal = exc if isinstance(exc, Fenced) else None
                log.warning("task %s: final checkpoint not saved: %s", task.id, exc)
    finally:
        hand.stopped(task.id, "the task stopped before its first invocation here")
        if session is not None:
            session.close()
    if isinstance(fatal, Fenced):  # (its outcome is not sent: see the agent's outbox)
        hand.departed(task.id, seq, error=str(fatal))
    if hand.leaving(task.id) and fatal is None:
        left(orc, task, seq, "moved to another node", keeper=keeper)
        return
    if fatal is not None:
        if keeper is not None and not isinstance(fatal, (Fenced, CheckpointRejected)):
            keeper.release()  # (a refused checkpoint is kept for inspection)
        orc.store.fail(task.id, fatal.kind, f"stopped after {seq} invocation(s): {fatal}")
        log.warning("stateful task %s stopped: %s", task.id, fatal)
        return
    if keeper is not None and (task.id in orc._cancelled or stopped is not None):
        keeper.release()  # the task is over: its checkpoint goes with it
    if task.id in orc._cancelled:
        orc.store.fail(
            task.id,
            TaskCancelled.__name__,
            f"cancelled after {seq} invocation(s) ({failures} failed in this run): "
            f"{orc._cancelled[task.id]}; the invocations are kept",
        )
        log.info("persistent task %s cancelled after %d invocations", task.id, seq)
        return
    if stopped is None:
        return  # shutting down: stays 'running' and resumes on the next start
    summary: dict[str, Any] = {"invocations": seq, "failed": failures, "last": last}
    if stopped != "invocations":
        summary["stopped"] = f"{stopped}={lifetime:g} s reached"
    if keeper is not None:
        c = keeper.costs
        summary["checkpoints"] = {
            "saved": c.saves,
            "mean_ms": round(1000 * (c.capture_s + c.store_s) / max(1, c.saves), 3),
            "state_bytes": c.state_bytes,
        }
    orc.store.finish(task.id, result=summary, timing={}, bytes_read=0, bytes_returned=0)
    log.info("persistent task %s finished after %d invocations (%s)", task.id, seq, stopped)
