"""The operations the controller log carries (:mod:`fades.controller.replica`).

Each is a name and JSON arguments; applying it to a :class:`ControllerStore` is
deterministic (the writer chose every clock value and random suffix), so every controller
that applies the same operations in the same order holds the same ``controller.db``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from fades.controller.pipestore import PipelineStore
from fades.controller.store import ControllerStore
from fades.outcome import Outcome
from fades.pipelines.protocol import StageEvent

Args = dict[str, Any]


def _publish_function(s: ControllerStore, a: Args) -> None:
    cur = s.function_owner(a["name"])
    owner = cur.owner if cur is not None and cur.owner else (a["tenant"] or "")
    s.set_function(a["name"], owner, a["digest"], a["created_ns"], a["at"])


def _add_task(s: ControllerStore, a: Args) -> str:
    return s.add_task(
        a["task_id"],
        tenant=a["tenant"],
        node=a["node"],
        where=a["where"],
        task=a["task"],
        placement=a["placement"],
        submitted_at=a["submitted_at"],
        digest=a["digest"],
        decision=a["decision"],
        suffix=a["suffix"],
        task_text=a.get("task_text"),  # (only on a lone controller's direct writes)
    )


def pipes(store: ControllerStore) -> PipelineStore:
    """The pipeline tables of ``store``'s database, written on ``store``'s own connection
    (so a record's pipeline writes commit in the same transaction as the rest)."""
    ps: PipelineStore | None = getattr(store, "_pipes", None)
    if ps is None:
        ps = PipelineStore(store.path)  # (creates the pipeline tables)
        ps._db.close()
        ps._db = store._db
        ps._lock = store._lock  # type: ignore[assignment]
        store._pipes = ps  # type: ignore[attr-defined]
    return ps


def _pipe_record(s: ControllerStore, a: Args) -> Any:
    items = [
        (StageEvent.model_validate(ev), {k: set(v) for k, v in finales.items()})
        for ev, finales in a["items"]
    ]
    return pipes(s).record_many(items)


#: the operations a log record may carry: name -> apply(store, arguments)
OPS: dict[str, Callable[[ControllerStore, Args], Any]] = {
    "add_task": _add_task,
    "mark_dispatched": lambda s, a: s.mark_dispatched(a["tenant"], a["task_id"], a["at"]),
    "mark_dispatched_many": lambda s, a: s.mark_dispatched_many(
        [(k[0], k[1]) for k in a["keys"]], a["at"]
    ),
    "add_outcome": lambda s, a: s.add_outcome(
        Outcome.model_validate(a["outcome"]),
        bytes_uplink=a["bytes_uplink"],
        stored_at=a["stored_at"],
    ),
    "node_outcome": lambda s, a: s.node_outcome(
        Outcome.model_validate(a["outcome"]),
        bytes_uplink=a["bytes_uplink"],
        stored_at=a["stored_at"],
    ),
    "publish_function": _publish_function,
    "set_node": lambda s, a: s.set_node(a["tenant"], a["task_id"], a["node"], a["why"]),
    # pipelines (their tables are in the same database)
    "pipe_put": lambda s, a: pipes(s).put(
        a["name"], a["tenant"], a["spec"], a["submitted_at"], a["ends_at"], a["at"]
    ),
    "pipe_state": lambda s, a: pipes(s).set_state(a["name"], a["state"], a["reason"], a["at"]),
    "pipe_new_runs": lambda s, a: pipes(s).new_runs(a["name"], a["count"], a["started_at"]),
    "pipe_end_run": lambda s, a: pipes(s).end_run(
        a["name"], a["run"], a["status"], a["reason"], a["at"]
    ),
    "pipe_record": _pipe_record,
}


def add_task_args(**kw: Any) -> Args:
    """Arguments of ``add_task`` with its random wire-id suffix chosen now."""
    return {**kw, "suffix": secrets.token_hex(8)}


def run_op(store: ControllerStore, name: str, args: Args) -> Callable[[], Any]:
    def op() -> Any:
        fn = OPS.get(name)
        if fn is None:
            raise ValueError(f"unknown controller log operation {name!r} (a newer version?)")
        return fn(store, args)

    return op
