"""The data broker: checks a tenant's data operations and fetches them concurrently.

It knows the node's connectors by name and nothing about computing. A task's data operations
are first all checked (access policy, known connector, how many), so a task either gets all
its data or is refused before anything is read; then they are fetched in parallel on a thread
pool.

Every fetch is bounded by :class:`~fades.broker.base.FetchLimits` (the node's, or a task's
narrower ones): a bounded count of what each operation selects is taken *before* anything is
fetched, so an oversized request costs at most ``row_cap + 1`` index steps and no memory
(:class:`~fades.errors.InputTooLarge`); the count and the fetch share one deadline, past which
connectors interrupt their reads and the broker stops waiting
(:class:`~fades.errors.RetrievalTimeLimitExceeded`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TypeVar

from fades.broker.base import (
    ROW_BYTES,
    BoundedConnector,
    Connector,
    Dataset,
    DataSummary,
    FetchLimits,
)
from fades.broker.explain import sensor_keys, why_empty
from fades.broker.policy import AccessPolicy
from fades.errors import (
    BrokerError,
    ConnectorError,
    FadesError,
    InputTooLarge,
    RetrievalTimeLimitExceeded,
)
from fades.task import DataOp

_T = TypeVar("_T")

#: How long past the deadline the broker waits for connectors to notice it.
_GRACE_S = 0.5


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB"


def _count_one(conn: BoundedConnector, op: DataOp, cap: int, deadline: float) -> int:
    return conn.count_at_most(op.select, cap, deadline=deadline)


def _reraise(exc: BaseException) -> Callable[[], None]:
    def call() -> None:
        raise exc

    return call


@dataclass(frozen=True, slots=True)
class OpStats:
    """How one data operation went. ``started``/``ended`` are ``time.perf_counter()`` values."""

    name: str
    connector: str
    rows: int
    nbytes: int
    seconds: float
    started: float
    ended: float


@dataclass(slots=True)
class FetchStats:
    """Per-operation and total figures of one :meth:`DataBroker.fetch`."""

    ops: dict[str, OpStats] = field(default_factory=dict)
    wall_seconds: float = 0.0

    @property
    def total_bytes(self) -> int:
        return sum(s.nbytes for s in self.ops.values())

    @property
    def total_rows(self) -> int:
        return sum(s.rows for s in self.ops.values())


def _pin_window(op: DataOp, now: datetime) -> DataOp:
    """Turn ``last_seconds`` into an absolute ``since`` so that all ops share one 'now'."""
    sel = op.select
    if sel.last_seconds is None:
        return op
    since = now - timedelta(seconds=sel.last_seconds)
    if sel.since is not None and sel.since > since:
        since = sel.since
    if sel.until is not None and since >= sel.until:
        # an empty window; keep it empty without building an invalid selector
        since = sel.until
    new_sel = sel.model_copy(update={"since": since, "last_seconds": None})
    return op.model_copy(update={"select": new_sel})


class DataBroker:
    """Fetches data operations from named connectors, under an access policy.

    Args:
        connectors: connector name (as used in ``DataOp.connector``) to connector.
        policy: who may read what; :meth:`AccessPolicy.allow_all` for single-user setups.
        max_workers: threads fetching operations in parallel.
        limits: what a fetch may cost when the caller gives no narrower limits.
    """

    def __init__(
        self,
        connectors: dict[str, Connector],
        policy: AccessPolicy | None = None,
        *,
        max_workers: int = 4,
        limits: FetchLimits | None = None,
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.connectors = dict(connectors)
        self.policy = policy if policy is not None else AccessPolicy.allow_all()
        self.max_workers = max_workers
        self.limits = limits if limits is not None else FetchLimits()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._closed = False

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._closed:
                raise BrokerError("the data broker is closed")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="fades-drb")
            return self._pool

    def close(self) -> None:
        """Stop the worker threads (waits for running fetches). Idempotent."""
        with self._pool_lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __enter__(self) -> DataBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self, tenant: str, ops: list[DataOp], limits: FetchLimits | None = None) -> None:
        """Refuse the whole request unless every op is allowed and names a known connector.

        Raises:
            InputTooLarge: more ops than ``limits.max_ops`` (the broker's limits by default).
            AccessDenied: the policy does not cover an op (checked for all ops first).
            ConnectorError: an op names a connector this node does not have.
            BrokerError: two ops share a name.
        """
        lim = limits or self.limits
        if len(ops) > lim.max_ops:
            raise InputTooLarge(
                f"the task has {len(ops)} data operations; this node allows at most "
                f"{lim.max_ops} per task (node limit max_data_ops)",
                limit="max_data_ops",
                value=lim.max_ops,
                tenant=tenant,
            )
        names = [op.name for op in ops]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise BrokerError(
                f"data operation names must be unique; repeated: {', '.join(dupes)}",
                tenant=tenant,
            )
        for op in ops:
            self.policy.check(tenant, op)
        for op in ops:
            if op.connector not in self.connectors:
                raise ConnectorError(
                    f"data op {op.name!r}: unknown connector {op.connector!r}; this node has: "
                    f"{', '.join(sorted(self.connectors)) or 'none'}",
                    tenant=tenant,
                    op=op.name,
                    connector=op.connector,
                )

    def _run(self, op: DataOp, deadline: float, max_rows: int | None) -> tuple[Dataset, OpStats]:
        started = time.perf_counter()
        conn = self.connectors[op.connector]
        if isinstance(conn, BoundedConnector):
            ds = conn.fetch(op.select, deadline=deadline, max_rows=max_rows)
        else:
            ds = conn.fetch(op.select)
        ended = time.perf_counter()
        if not isinstance(ds, Dataset):
            raise TypeError(f"fetch returned {type(ds).__name__}, not a Dataset")
        stats = OpStats(
            name=op.name,
            connector=op.connector,
            rows=len(ds),
            nbytes=ds.nbytes,
            seconds=ended - started,
            started=started,
            ended=ended,
        )
        return ds, stats

    def _too_large(self, tenant: str, op: str, rows: int, lim: FetchLimits) -> InputTooLarge:
        """The error for a selection of more than ``lim.row_cap`` rows, naming the limit."""
        if lim.max_rows <= lim.max_bytes // ROW_BYTES:
            return InputTooLarge(
                f"the data operations select more than {lim.max_rows:,} rows (at data op "
                f"{op!r}); this node allows at most {lim.max_rows:,} rows per task "
                "(node limit max_rows)",
                limit="max_rows",
                value=lim.max_rows,
                tenant=tenant,
                op=op,
            )
        what = (
            "the function's memory cap (memory_mib)"
            if lim.bytes_limit == "memory_mib"
            else f"the node limit {lim.bytes_limit}"
        )
        return InputTooLarge(
            f"the data operations select more than {lim.row_cap:,} rows (at data op {op!r}), "
            f"over {_mib(lim.max_bytes)} of input at {ROW_BYTES} bytes a row; {what} allows "
            f"{_mib(lim.max_bytes)}",
            limit=lim.bytes_limit,
            value=lim.max_bytes,
            tenant=tenant,
            op=op,
        )

    def _count(
        self, tenant: str, ops: list[DataOp], lim: FetchLimits, deadline: float
    ) -> dict[str, int]:
        """Bounded counts of what each op selects; refuses before anything is fetched."""
        cap = lim.row_cap
        counts: dict[str, int] = {}
        total = 0
        for op in ops:
            conn = self.connectors[op.connector]
            if not isinstance(conn, BoundedConnector):
                continue  # counted after its fetch instead
            n = self._guarded(tenant, op, lim, partial(_count_one, conn, op, cap - total, deadline))
            counts[op.name] = n
            total += n
            if total > cap:
                raise self._too_large(tenant, op.name, total, lim)
        return counts

    def _guarded(self, tenant: str, op: DataOp, lim: FetchLimits, call: Callable[[], _T]) -> _T:
        """Run a connector call, translating its failures into broker errors."""
        try:
            return call()
        except RetrievalTimeLimitExceeded:
            raise RetrievalTimeLimitExceeded(lim.seconds, tenant=tenant, op=op.name) from None
        except InputTooLarge:
            raise self._too_large(tenant, op.name, lim.row_cap + 1, lim) from None
        except FadesError:
            raise
        except Exception as exc:
            raise ConnectorError(
                f"data op {op.name!r}: connector {op.connector!r} failed: "
                f"{type(exc).__name__}: {exc}",
                tenant=tenant,
                op=op.name,
                connector=op.connector,
            ) from exc

    def fetch(
        self,
        tenant: str,
        ops: list[DataOp],
        *,
        now: datetime | None = None,
        limits: FetchLimits | None = None,
    ) -> tuple[dict[str, Dataset], FetchStats]:
        """Check, count, then fetch all ``ops`` concurrently; datasets are keyed by op name.

        ``last_seconds`` windows of all ops are anchored at the same ``now`` (default: the
        current time). ``limits`` (default: the broker's) bound the whole retrieval.

        Raises:
            AccessDenied, ConnectorError, BrokerError: see :meth:`check`; a connector that
                fails raises ConnectorError naming the op and the connector.
            InputTooLarge: the ops select more than the limits allow (before fetching).
            RetrievalTimeLimitExceeded: counting and fetching took longer than
                ``limits.seconds``; reads in progress are interrupted.
        """
        lim = limits or self.limits
        self.check(tenant, ops, lim)
        now = now or datetime.now(UTC)
        pinned = [_pin_window(op, now) for op in ops]
        t0 = time.perf_counter()
        deadline = time.monotonic() + lim.seconds
        counts = self._count(tenant, pinned, lim, deadline)
        # an op may grow into the slack left by the count (readings keep arriving)
        slack = lim.row_cap - sum(counts.values())
        futures: list[Future[tuple[Dataset, OpStats]]]
        if len(pinned) == 1 and isinstance(self.connectors[ops[0].connector], BoundedConnector):
            # nothing to overlap, and the connector keeps the deadline itself: run inline
            if self._closed:
                raise BrokerError("the data broker is closed")
            only: Future[tuple[Dataset, OpStats]] = Future()
            try:
                only.set_result(self._run(pinned[0], deadline, counts.get(ops[0].name, 0) + slack))
            except Exception as failure:  # translated below like pooled failures
                only.set_exception(failure)
            futures = [only]
        else:
            pool = self._executor()
            futures = [
                pool.submit(self._run, op, deadline, counts.get(op.name, 0) + slack)
                for op in pinned
            ]
            _, pending = wait(futures, timeout=max(0.0, deadline - time.monotonic()) + _GRACE_S)
            if pending:
                for fut in pending:
                    fut.cancel()  # not started yet: never starts; running: ends at the deadline
                raise RetrievalTimeLimitExceeded(lim.seconds, tenant=tenant)
        stats = FetchStats(wall_seconds=time.perf_counter() - t0)
        out: dict[str, Dataset] = {}
        for op, fut in zip(ops, futures, strict=True):
            exc = fut.exception()
            if exc is not None:
                self._guarded(tenant, op, lim, _reraise(exc))
            ds, st = fut.result()
            out[op.name] = ds
            stats.ops[op.name] = st
        if stats.total_rows > lim.row_cap:
            biggest = max(stats.ops.values(), key=lambda s: s.rows)
            raise self._too_large(tenant, biggest.name, stats.total_rows, lim)
        if time.monotonic() > deadline + _GRACE_S:
            raise RetrievalTimeLimitExceeded(lim.seconds, tenant=tenant)
        return out, stats

    def explain_empty(self, tenant: str, op: DataOp) -> str | None:
        """Why ``op`` selected no rows when it names a location or sensor type this node does
        not hold (with the nearest it does), in one line; None when the names are all known
        or the connector cannot list its sensors cheaply. Never raises: it only words an
        error that is raised anyway."""
        conn = self.connectors.get(op.connector)
        if conn is None:
            return None
        try:
            keys = sensor_keys(conn)
            return None if keys is None else why_empty(op, keys, self.policy.rule(tenant))
        except Exception:  # an explanation must not replace the error it explains
            return None

    def describe(self, tenant: str | None = None) -> dict[str, list[DataSummary]]:
        """Summaries per connector name; only what ``tenant`` may read if one is given."""
        out: dict[str, list[DataSummary]] = {}
        for name, conn in sorted(self.connectors.items()):
            try:
                summaries = conn.describe()
            except Exception as exc:
                raise ConnectorError(
                    f"connector {name!r} could not describe its data: {exc}", connector=name
                ) from exc
            out[name] = summaries if tenant is None else self.policy.visible(tenant, summaries)
        return out
