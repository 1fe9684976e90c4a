"""The controller log: every write to ``controller.db`` as a record in a replicated stream.

Several controllers serve the same cluster, so none of them may hold state the others cannot
see. Each write the controller makes (accept a task, mark it dispatched, store an outcome,
record a function's owner, move a task to another node) is an **operation**: a name from
:data:`OPS` and JSON arguments, with every clock value and random suffix chosen before it is
written, so applying it gives the same result on every controller.

:class:`StreamLog` publishes groups of operations to the JetStream stream ``FADES_CTL_LOG``
(subject ``fades.ctl.log``, as many replicas as the fabric's ``replicas`` setting). Every
controller, the writer included, reads the stream in sequence order and applies each record
to its own ``controller.db``, storing the record's sequence in the same transaction; on
start it resumes after that sequence (a new controller replays the whole log). The writer
waits until its own reader has applied its record and returns what applying it returned,
so a duplicate task id or the first of two outcomes is decided by log order, the same way
everywhere. Reads stay local SQLite queries.

:class:`DirectLog` applies the same operations straight to the local database (one
controller on a bus without JetStream, e.g. the in-memory one, or ``FADES_CTL_LOG=off``).

Both call :attr:`hooks` on the event loop with every operation applied, whoever wrote it:
that is how long-polls and result streams on every controller wake for an outcome another
controller received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from fades.aiostop import cancel_all, wait_for
from fades.controller.commits import GroupCommitter
from fades.controller.logops import OPS, Args, run_op
from fades.controller.store import ControllerStore
from fades.errors import FabricError, PayloadTooLarge

log = logging.getLogger("fades.controller")

LOG_STREAM = "FADES_CTL_LOG"
LOG_SUBJECT = "fades.ctl.log"
#: most operations in one log record
MAX_GROUP = 512
#: seconds a writer waits for its record to be applied before giving up
APPLY_TIMEOUT_S = 60.0
#: seconds a record's publish is retried (same message id: stored once) before giving up
PUBLISH_RETRY_S = 15.0
#: seconds between checks that the reader is not behind the stream without noticing
WATCHDOG_S = 2.0
#: seconds the stream de-duplicates a record's message id
DUPLICATE_WINDOW_S = 120.0

#: called on the event loop with (operation, arguments, result) of each applied operation
Hook = Callable[[str, Args, Any], None]


class DirectLog:
    """Operations applied straight to the local database, in group commits."""

    def __init__(self, store: ControllerStore, commits: GroupCommitter | None = None) -> None:
        self.store = store
        self.commits = commits or GroupCommitter(store)
        self.hooks: list[Hook] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await asyncio.to_thread(self.commits.close)

    @property
    def groups(self) -> int:
        """Transactions committed (one per group of writes)."""
        return self.commits.groups

    @property
    def calls(self) -> int:
        """Operations written."""
        return self.commits.calls

    async def write(self, name: str, args: Args) -> Any:
        if name not in OPS:
            raise ValueError(f"unknown controller log operation {name!r}")
        result = await self.commits.call(run_op(self.store, name, args))
        _call_hooks(self.hooks, name, args, result)
        return result


def _call_hooks(hooks: list[Hook], name: str, args: Args, result: Any) -> None:
    for hook in hooks:
        try:
            hook(name, args, result)
        except Exception:  # a listener's bug must not stop the log
            log.exception("a controller log hook failed")


class StreamLog:
    """The controller log on a JetStream stream (``bus`` is a connected NatsBus)."""

    def __init__(self, store: ControllerStore, bus: Any, max_group: int = MAX_GROUP) -> None:
        if max_group < 1:
            raise ValueError("max_group must be at least 1")
        self.store = store
        self.bus = bus
        self.max_group = max_group
        self.hooks: list[Hook] = []
        #: sequence of the last record applied here
        self.applied_seq = 0
        #: records published (groups) and operations written by this controller, records
        #: applied here (for tests and the benchmark)
        self.groups = 0
        self.calls = 0
        self.applied = 0
        self._uid = uuid.uuid4().hex[:12]
        self._n = 0
        self._log_id = ""
        self._queue: list[tuple[str, Args, bytes, asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self._waiting: dict[str, list[asyncio.Future[Any]]] = {}
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._sub: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._progress = asyncio.Event()

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self, catch_up_timeout: float = 120.0) -> None:
        """Open the stream, resume after the last record applied here, and catch up with
        the records written meanwhile before returning (reads are current from then on)."""
        from nats.js.api import RetentionPolicy, StorageType, StreamConfig
        from nats.js.errors import NotFoundError

        js = self.bus.js
        try:
            try:
                info = await js.stream_info(LOG_STREAM)
            except NotFoundError:
                cfg = StreamConfig(
                    name=LOG_STREAM,
                    subjects=[LOG_SUBJECT],
                    retention=RetentionPolicy.LIMITS,
                    storage=StorageType.FILE,
                    num_replicas=self.bus.replicas,
                    duplicate_window=DUPLICATE_WINDOW_S,
                )
                with contextlib.suppress(Exception):  # another controller created it first
                    await js.add_stream(cfg)
                info = await js.stream_info(LOG_STREAM)
        except Exception as exc:
            raise FabricError(f"cannot open the controller log {LOG_STREAM}: {exc!r}") from exc
        self._log_id = str(info.created)
        seq, log_id = await asyncio.to_thread(self.store.log_position)
        if log_id != self._log_id:
            if log_id is not None:
                log.warning("the controller log was re-created: applying it again from the start")
            seq = 0
        first = int(info.state.first_seq or 1)
        if seq + 1 < first:
            log.error(
                "records %d..%d of the controller log are gone: this controller.db misses them",
                seq + 1,
                first - 1,
            )
            seq = first - 1
        self.applied_seq = seq
        target = int(info.state.last_seq or 0)
        await self._subscribe()
        self._tasks = [
            asyncio.create_task(self._apply_loop(), name="fades-log-apply"),
            asyncio.create_task(self._flush_loop(), name="fades-log-flush"),
            asyncio.create_task(self._watchdog(), name="fades-log-watchdog"),
        ]
        deadline = time.monotonic() + catch_up_timeout
        while self.applied_seq < target:
            if time.monotonic() > deadline:
                raise FabricError(
                    f"the controller log did not catch up in {catch_up_timeout:g} s "
                    f"(applied {self.applied_seq} of {target})"
                )
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await wait_for(self._progress.wait(), 1.0)
        log.info("controller log: applied up to record %d", self.applied_seq)

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_all(tasks)
        await self._unsubscribe()
        for futs in self._waiting.values():
            for f in futs:
                if not f.done():
                    f.set_exception(FabricError("the controller stopped"))
        self._waiting.clear()

    # --- writing -----------------------------------------------------------------------------
    async def write(self, name: str, args: Args) -> Any:
        """Append one operation (grouped with others waiting) and return the result of
        applying it here; raises what applying it raised."""
        if name not in OPS:
            raise ValueError(f"unknown controller log operation {name!r}")
        encoded = json.dumps([name, args], separators=(",", ":")).encode()
        limit = self.bus.max_payload - 4096
        if len(encoded) > limit:
            raise PayloadTooLarge(
                f"the controller log record would be {len(encoded)} bytes; the fabric "
                f"carries at most {limit} bytes: send less"
            )
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((name, args, encoded, fut))
        self._wake.set()
        try:
            return await wait_for(asyncio.shield(fut), APPLY_TIMEOUT_S)
        except TimeoutError:
            raise FabricError(
                f"the controller log did not apply a {name} within {APPLY_TIMEOUT_S:g} s"
            ) from None

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                limit = self.bus.max_payload - 4096
                size, n = 2, 0
                while n < len(self._queue) and n < self.max_group:
                    if n and size + len(self._queue[n][2]) + 1 > limit:
                        break
                    size += len(self._queue[n][2]) + 1
                    n += 1
                group, self._queue = self._queue[:n], self._queue[n:]
                self._n += 1
                msg_id = f"{self._uid}.{self._n}"
                data = b"[" + b",".join(e for _, _, e, _ in group) + b"]"
                futs = [f for _, _, _, f in group]
                self._waiting[msg_id] = futs
                try:
                    await self._publish(data, msg_id)
                    self.groups += 1
                    self.calls += len(group)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._waiting.pop(msg_id, None)
                    err = FabricError(f"the controller log did not store the write: {exc}")
                    for f in futs:
                        if not f.done():
                            f.set_exception(err)

    async def _publish(self, data: bytes, msg_id: str) -> None:
        deadline = time.monotonic() + PUBLISH_RETRY_S
        delay = 0.05
        while True:
            try:
                await self.bus.js.publish(
                    LOG_SUBJECT, data, timeout=5.0, headers={"Nats-Msg-Id": msg_id}
                )
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if time.monotonic() + delay > deadline:
                    raise FabricError(repr(exc)) from exc
                log.warning("controller log publish failed (%r); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)

    # --- reading and applying ----------------------------------------------------------------
    async def _subscribe(self) -> None:
        from nats.js.api import ConsumerConfig, DeliverPolicy

        await self._unsubscribe()
        old, inbox = self._inbox, asyncio.Queue[Any]()
        self._inbox = inbox
        # the apply loop may be waiting on the old queue, which nothing feeds any more: wake
        # it so it reads the new one (else a watchdog resubscribe stalls the log for good)
        old.put_nowait(None)

        async def on_msg(msg: Any) -> None:
            inbox.put_nowait(msg)

        cfg = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.applied_seq + 1
        )
        self._sub = await self.bus.js.subscribe(
            LOG_SUBJECT, cb=on_msg, ordered_consumer=True, config=cfg, stream=LOG_STREAM
        )

    async def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await wait_for(sub.unsubscribe(), 5.0)

    async def _apply_loop(self) -> None:
        while True:
            inbox = self._inbox
            first = await inbox.get()
            if first is None:  # the queue was replaced by a resubscribe
                continue
            msgs = [first]
            while not inbox.empty() and len(msgs) < 256:
                msg = inbox.get_nowait()
                if msg is None:
                    break
                msgs.append(msg)
            records: list[tuple[int, str | None, list[Any]]] = []
            expect = self.applied_seq + 1
            gap = False
            for msg in msgs:
                seq = int(msg.metadata.sequence.stream)
                if seq < expect:
                    continue  # delivered again after a reset
                if seq > expect:
                    gap = True
                    break
                expect += 1
                try:
                    ops = json.loads(msg.data)
                    if not isinstance(ops, list):
                        raise ValueError("not a list")
                except ValueError as exc:
                    log.error("controller log record %d is malformed (%s): skipped", seq, exc)
                    ops = []
                records.append((seq, (msg.headers or {}).get("Nats-Msg-Id"), ops))
            if records:
                try:
                    await self._apply(records)
                except asyncio.CancelledError:
                    raise
                except Exception:  # the database failed: read those records again
                    log.exception("controller log: applying records failed; retrying")
                    await asyncio.sleep(1.0)
                    gap = True
            if gap:
                log.warning("controller log: a gap after record %d; reading again", expect - 1)
                await self._resubscribe()

    async def _apply(self, records: list[tuple[int, str | None, list[Any]]]) -> None:
        flat: list[tuple[str, Args]] = []
        for _, _, ops in records:
            for op in ops:
                ok = isinstance(op, list) and len(op) == 2 and isinstance(op[1], dict)
                flat.append((str(op[0]), op[1]) if ok else ("?", {}))
        last = records[-1][0]
        store = self.store
        results = await asyncio.to_thread(
            store.group, [run_op(store, n, a) for n, a in flat], (last, self._log_id)
        )
        self.applied_seq = last
        self.applied += len(records)
        self._progress.set()
        i = 0
        for _, msg_id, ops in records:
            mine = self._waiting.pop(msg_id, None) if msg_id else None
            for j in range(len(ops)):
                name, args = flat[i]
                ok, value = results[i]
                i += 1
                if ok:
                    _call_hooks(self.hooks, name, args, value)
                if mine is not None and j < len(mine) and not mine[j].done():
                    if ok:
                        mine[j].set_result(value)
                    else:
                        mine[j].set_exception(value)

    async def _resubscribe(self) -> None:
        try:
            await self._subscribe()
        except Exception as exc:
            log.warning("controller log: cannot read the stream (%r); retrying", exc)
            self._sub = None

    async def _watchdog(self) -> None:
        """Read again if the stream holds records the reader has not delivered (the reader
        lost its consumer in a hub server failure, say)."""
        behind_since: float | None = None
        seen = -1
        while True:
            await asyncio.sleep(WATCHDOG_S)
            try:
                info = await wait_for(self.bus.js.stream_info(LOG_STREAM), 5.0)
            except Exception:
                continue
            last = int(info.state.last_seq or 0)
            moved, seen = seen != self.applied_seq, self.applied_seq
            if last <= self.applied_seq or moved or not self._inbox.empty():
                behind_since = None
                continue
            if self._sub is None or (
                behind_since is not None and time.monotonic() - behind_since > WATCHDOG_S
            ):
                log.warning("controller log: reader stalled at %d of %d", self.applied_seq, last)
                await self._resubscribe()
                behind_since = None
            elif behind_since is None:
                behind_since = time.monotonic()


#: what the controller writes through: the log on the fabric, or straight to the database
Log = DirectLog | StreamLog
