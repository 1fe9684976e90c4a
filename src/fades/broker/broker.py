"""The data broker: checks a tenant's data operations and fetches them concurrently.

It knows the node's connectors by name and nothing about computing. A task's data operations
are first all checked (access policy, known connector), so a task either gets all its data
or is refused before anything is read; then they are fetched in parallel on a thread pool.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from fades.broker.base import Connector, Dataset, DataSummary
from fades.broker.policy import AccessPolicy
from fades.errors import BrokerError, ConnectorError
from fades.task import DataOp


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
    """

    def __init__(
        self,
        connectors: dict[str, Connector],
        policy: AccessPolicy | None = None,
        *,
        max_workers: int = 4,
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.connectors = dict(connectors)
        self.policy = policy if policy is not None else AccessPolicy.allow_all()
        self.max_workers = max_workers
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

    def check(self, tenant: str, ops: list[DataOp]) -> None:
        """Refuse the whole request unless every op is allowed and names a known connector.

        Raises:
            AccessDenied: the policy does not cover an op (checked for all ops first).
            ConnectorError: an op names a connector this node does not have.
            BrokerError: two ops share a name.
        """
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

    def _run(self, op: DataOp) -> tuple[Dataset, OpStats]:
        started = time.perf_counter()
        ds = self.connectors[op.connector].fetch(op.select)
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

    def fetch(
        self, tenant: str, ops: list[DataOp], *, now: datetime | None = None
    ) -> tuple[dict[str, Dataset], FetchStats]:
        """Check, then fetch all ``ops`` concurrently; datasets are keyed by op name.

        ``last_seconds`` windows of all ops are anchored at the same ``now`` (default: the
        current time).

        Raises:
            AccessDenied, ConnectorError, BrokerError: see :meth:`check`; a connector that
                fails raises ConnectorError naming the op and the connector.
        """
        self.check(tenant, ops)
        now = now or datetime.now(UTC)
        pinned = [_pin_window(op, now) for op in ops]
        t0 = time.perf_counter()
        futures: list[Future[tuple[Dataset, OpStats]]]
        if len(pinned) == 1:
            # nothing to overlap: run inline and skip the thread hand-off
            if self._closed:
                raise BrokerError("the data broker is closed")
            only: Future[tuple[Dataset, OpStats]] = Future()
            try:
                only.set_result(self._run(pinned[0]))
            except Exception as failure:  # translated below like pooled failures
                only.set_exception(failure)
            futures = [only]
        else:
            pool = self._executor()
            futures = [pool.submit(self._run, op) for op in pinned]
            wait(futures)
        stats = FetchStats(wall_seconds=time.perf_counter() - t0)
        out: dict[str, Dataset] = {}
        for op, fut in zip(ops, futures, strict=True):
            exc = fut.exception()
            if exc is not None:
                raise ConnectorError(
                    f"data op {op.name!r}: connector {op.connector!r} failed: "
                    f"{type(exc).__name__}: {exc}",
                    tenant=tenant,
                    op=op.name,
                    connector=op.connector,
                ) from exc
            ds, st = fut.result()
            out[op.name] = ds
            stats.ops[op.name] = st
        return out, stats

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
