"""NatsBus: the :class:`~fades.bus.base.Bus` over NATS and JetStream (nats-py).

Built on what :mod:`fades.fabric` already learned:

* connecting polls the port first and then reconnects forever (:func:`fades.fabric.connect`);
* a durable consumer pulls one message per fetch (a batch fetch waits for the whole batch);
* replies above one chunk go as flow-controlled parts (:mod:`fades.fabric.transfer`), so no
  message exceeds ``max_payload`` and a capped uplink is not flooded;
* errors raised by a handler travel back as their :mod:`fades.errors` class.

Key-value buckets and object stores are in :mod:`fades.bus.nats_stores`. Every nats-py
exception is translated there and here into :class:`~fades.errors.FabricError`
(or ``FabricConflict`` / ``NodeUnavailable``); nothing above this module imports nats-py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, NotFoundError

from fades.aiostop import cancel_all, wait_for
from fades.bus.base import DUPLICATE_WINDOW_S, Bus, Discard, Handler, Listener
from fades.bus.nats_domain import DomainWrites
from fades.bus.nats_stores import (
    OP_TIMEOUT_S,
    NatsKv,
    NatsObjects,
    fabric_error,
    open_or_create,
)
from fades.errors import FabricError, FadesError, QueueFull
from fades.fabric.connect import FabricSettings, connect
from fades.fabric.transfer import CHUNK, reply_error, request_chunks, send_chunks
from fades.fabric.upstream import UP_STREAM, up_stream_config, up_subject

log = logging.getLogger("fades.bus")

#: how long one pull waits for a message
FETCH_TIMEOUT_S = 1.0
#: pause after a failed pull (the server may be restarting)
BACKOFF_S = (0.2, 0.5)


def _pending(msg: Msg) -> int:
    """Messages the consumer still holds for us after ``msg`` (0 if unknown)."""
    try:
        return int(msg.metadata.num_pending or 0)
    except Exception:
        return 0


class NatsDelivery:
    """A JetStream message taken from a pull consumer."""

    def __init__(self, msg: Msg) -> None:
        self._msg = msg
        self.subject = msg.subject
        self.data = msg.data
        self.msg_id: str | None = (msg.headers or {}).get("Nats-Msg-Id")
        try:
            self.delivered = int(msg.metadata.num_delivered)
        except Exception:
            self.delivered = 1

    async def ack(self) -> None:
        try:
            await self._msg.ack()
        except Exception as exc:
            raise fabric_error("ack failed", exc) from exc

    async def nak(self, delay: float | None = None) -> None:
        try:
            await self._msg.nak(delay=delay)
        except Exception as exc:
            raise fabric_error("nak failed", exc) from exc

    async def term(self) -> None:
        try:
            await self._msg.term()
        except Exception as exc:
            raise fabric_error("term failed", exc) from exc

    async def in_progress(self) -> None:
        try:
            await self._msg.in_progress()
        except Exception as exc:
            raise fabric_error("in_progress failed", exc) from exc


class NatsBus:
    """The Bus over one nats-py connection (it reconnects by itself after a server restart)."""

    def __init__(self, nc: NATS, settings: FabricSettings | None = None) -> None:
        self.nc = nc
        self.settings = settings or FabricSettings()
        #: the hub's JetStream (through the site's leaf server when ``settings.domain`` is set)
        self.js = nc.jetstream(domain=self.settings.domain)
        #: copies of each stream, bucket and object store created through this bus
        self.replicas = self.settings.replicas
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        #: subject -> its stream's name, for QueueFull messages (a flood refuses many)
        self._stream_of: dict[str, str] = {}
        #: the site-domain view (local()) and, in a view, the bus it belongs to
        self._local: NatsBus | None = None
        self._parent: NatsBus | None = None
        self._up_ready = False
        self._up_lock = asyncio.Lock()
        #: views in other JetStream domains (in_domain)
        self._domains: dict[str, NatsBus] = {}

    @classmethod
    async def connect(
        cls,
        settings: FabricSettings | str | None = None,
        *,
        name: str = "fades",
        timeout: float = 10.0,
    ) -> NatsBus:
        """Connect (waiting up to ``timeout`` for the server).

        Raises:
            FabricError: unreachable, or the server refused the credentials.
        """
        if settings is None or isinstance(settings, str):
            settings = FabricSettings.from_env(settings)
        return cls(await connect(settings, name=name, timeout=timeout), settings)

    @property
    def max_payload(self) -> int:
        return int(self.nc.max_payload)

    @property
    def reconnects(self) -> int:
        """How often the connection came back after a loss (streams may need re-creating)."""
        return int(self.nc.stats["reconnects"])

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    async def stream(
        self,
        name: str,
        subjects: list[str],
        *,
        max_msgs_per_subject: int | None = None,
        max_bytes: int | None = None,
        discard: Discard = "old",
    ) -> None:
        if discard not in ("old", "new"):
            raise ValueError(f"discard must be 'old' or 'new', not {discard!r}")
        per_subject = max_msgs_per_subject or -1
        total = max_bytes or -1
        policy = DiscardPolicy.NEW if discard == "new" else DiscardPolicy.OLD
        existing: Any = None
        try:
            existing = (await wait_for(self.js.stream_info(name), OP_TIMEOUT_S)).config
        except NotFoundError:
            pass
        except Exception as exc:
            raise fabric_error(f"stream {name}", exc) from exc
        if existing is not None and (
            (existing.max_msgs_per_subject or -1) == per_subject
            and (existing.max_bytes or -1) == total
            and (existing.discard or DiscardPolicy.OLD) == policy
        ):
            return
        cfg = StreamConfig(
            name=name,
            subjects=existing.subjects if existing is not None else subjects,
            storage=StorageType.FILE,
            retention=RetentionPolicy.WORK_QUEUE,
            duplicate_window=DUPLICATE_WINDOW_S,
            max_msgs_per_subject=per_subject,
            max_bytes=total,
            discard=policy,
            # discard new applies to the per-subject bound too (not only to the stream's)
            discard_new_per_subject=discard == "new" and per_subject > 0,
            num_replicas=self.replicas,
            # keep sources someone configured on the stream
            sources=existing.sources if existing is not None else None,
        )
        try:
            if existing is None:
                await wait_for(self.js.add_stream(cfg), OP_TIMEOUT_S)
            else:
                await wait_for(self.js.update_stream(cfg), OP_TIMEOUT_S)
        except Exception as exc:
            raise fabric_error(f"creating stream {name}", exc) from exc

    async def pending(self, stream: str, durable: str) -> int | None:
        try:
            info = await wait_for(self.js.consumer_info(stream, durable), OP_TIMEOUT_S)
        except NotFoundError:
            return None
        except Exception as exc:
            raise fabric_error(f"consumer {stream}/{durable}", exc) from exc
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def publish_up(self, subject: str, data: bytes, *, msg_id: str | None = None) -> None:
        site = self.settings.site
        if not site:
            await self.publish(subject, data, msg_id=msg_id)
            return
        # at a site: into the site's FADES_UP (works while the uplink is down); the site's
        # forwarder publishes it to the hub as ``subject`` (fades.fabric.forward)
        await self.ensure_up()
        await self.local().publish(up_subject(site, subject), data, msg_id=msg_id)

    async def ensure_up(self) -> None:
        """At a site: create (once, idempotent) the site stream ``FADES_UP``."""
        site = self.settings.site
        view = self.local()
        if site and not view._up_ready:
            async with view._up_lock:
                if not view._up_ready:
                    await view._ensure_up_stream(site)

    async def _ensure_up_stream(self, site: str) -> None:
        cfg = up_stream_config(site)
        try:
            try:
                await wait_for(self.js.stream_info(UP_STREAM), OP_TIMEOUT_S)
                await wait_for(self.js.update_stream(cfg), OP_TIMEOUT_S)
            except NotFoundError:
                await wait_for(self.js.add_stream(cfg), OP_TIMEOUT_S)
        except Exception as exc:
            raise fabric_error(f"site stream {UP_STREAM} at {site}", exc) from exc
        self._up_ready = True

    def local(self) -> NatsBus:
        """At a site: a view on the same connection in the site's own JetStream domain
        (streams, buckets and publishes that work while the uplink is down; one copy each,
        the leaf is one server). Closing the view leaves the connection open."""
        if not self.settings.site or self._parent is not None:
            return self
        if self._local is None:
            view = NatsBus(self.nc, replace(self.settings, domain=None, replicas=1))
            view._parent = self
            self._local = view
        return self._local

    def in_domain(self, domain: str | None) -> NatsBus:
        """A view on this connection in JetStream domain ``domain`` (sitepipes: a site's
        pipeline stream, reached from the hub or from a node at that site; one copy of
        each stream, a site is one leaf server). Cached; closing the bus closes it."""
        if self._parent is not None:
            return self if domain is None else self._parent.in_domain(domain)
        if domain is None:
            return self
        view = self._domains.get(domain)
        if view is None:
            view = NatsBus(self.nc, replace(self.settings, domain=domain, replicas=1))
            view._parent = self
            self._domains[domain] = view
        return view

    async def publish(self, subject: str, data: bytes, *, msg_id: str | None = None) -> None:
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        try:
            await self.js.publish(subject, data, timeout=OP_TIMEOUT_S, headers=headers)
        except APIError as exc:
            if "maximum" in (exc.description or "").lower():  # messages/bytes exceeded
                stream = self._stream_of.get(subject, "?")
                if stream == "?":
                    with contextlib.suppress(Exception):
                        stream = await wait_for(
                            self.js.find_stream_name_by_subject(subject), OP_TIMEOUT_S
                        )
                        if len(self._stream_of) >= 1024:
                            self._stream_of.clear()
                        self._stream_of[subject] = stream
                raise QueueFull(
                    f"stream {stream}: publish on {subject} refused, {exc.description}"
                ) from None
            raise fabric_error(f"publish on {subject} not stored", exc) from exc
        except Exception as exc:
            raise fabric_error(f"publish on {subject} not stored", exc) from exc

    async def consume(
        self, stream: str, durable: str, subject: str, *, ack_wait: float = 30.0, batch: int = 1
    ) -> AsyncIterator[NatsDelivery]:
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_deliver=-1,
            filter_subject=subject,
        )
        psub: Any = None
        failures = 0
        # A pull for a whole batch that gets its first message keeps waiting for the rest
        # (up to FETCH_TIMEOUT_S) unless the server says there is no more; so one message is
        # pulled at a time (handed over as soon as it arrives), and then as many as the
        # consumer reports still pending behind it, up to ``batch``, in one pull.
        want = 1
        try:
            while not self._closed:
                try:
                    if psub is None:
                        psub = await wait_for(
                            self.js.pull_subscribe(
                                subject, durable=durable, stream=stream, config=config
                            ),
                            OP_TIMEOUT_S,
                        )
                        if failures:
                            log.info("consumer %s: consuming again", durable)
                    msgs = await psub.fetch(want, timeout=FETCH_TIMEOUT_S)
                except TimeoutError:
                    want = 1
                    if failures and self.nc.is_connected:  # answered: nothing waiting
                        log.info("consumer %s: pulling again after %d failures", durable, failures)
                        failures = 0
                    continue  # nothing there (or a reconnect swallowed the pull request)
                except Exception as exc:
                    failures += 1
                    want = 1
                    if failures == 1:  # once per outage (a site's cut uplink: many a minute)
                        log.warning("consumer %s: pull failed: %r", durable, exc)
                    if failures >= 3 and psub is not None:
                        with contextlib.suppress(Exception):
                            await wait_for(psub.unsubscribe(), OP_TIMEOUT_S)
                        psub = None
                    await asyncio.sleep(BACKOFF_S[0] if failures < 3 else BACKOFF_S[1])
                    continue
                if failures:
                    log.info("consumer %s: pulling again after %d failures", durable, failures)
                failures = 0
                want = max(1, min(batch, _pending(msgs[-1]))) if msgs else 1
                for msg in msgs:
                    yield NatsDelivery(msg)
        finally:
            if psub is not None:
                # bounded: while the server is away an unsubscribe can wait for a reconnect,
                # and a consumer being cancelled (an agent stopping) must not hang on it
                with contextlib.suppress(Exception):
                    await wait_for(psub.unsubscribe(), OP_TIMEOUT_S)

    async def kv(self, bucket: str, *, history: int = 1, ttl: float | None = None) -> NatsKv:
        cfg = KeyValueConfig(
            bucket=bucket,
            history=history,
            ttl=ttl,
            storage=StorageType.FILE,
            replicas=self.replicas,
        )
        kv = await open_or_create(
            f"KV bucket {bucket}", self.js.key_value(bucket), lambda: self.js.create_key_value(cfg)
        )
        if self.settings.domain:
            # nats-py 2.16 publishes KV writes on the bare $KV subject, which a leaf server
            # cannot route to another domain (nats.py issue 1010): prefix them as nats.go does
            kv._js = cast(Any, DomainWrites(kv._js, f"$JS.{self.settings.domain}.API."))
        return NatsKv(kv, bucket)

    async def objects(self, bucket: str) -> NatsObjects:
        store = await open_or_create(
            f"object store {bucket}",
            self.js.object_store(bucket),
            lambda: self.js.create_object_store(
                bucket,
                ObjectStoreConfig(bucket=bucket, storage=StorageType.FILE, replicas=self.replicas),
            ),
        )
        return NatsObjects(store, bucket)

    async def request(self, subject: str, data: bytes, *, timeout: float = 5.0) -> bytes:
        try:
            reply, _ = await request_chunks(
                self.nc, subject, data, timeout=timeout, idle_timeout=max(timeout, 30.0)
            )
        except FadesError:
            raise
        except Exception as exc:
            raise fabric_error(f"request on {subject}", exc) from exc
        return reply

    async def serve(self, subject: str, handler: Handler, *, queue: str | None = None) -> None:
        async def _answer(msg: Msg) -> None:
            if not msg.reply:
                return
            try:
                out = await handler(msg.data)
                if len(out) <= CHUNK:
                    await self.nc.publish(msg.reply, out)
                else:
                    await send_chunks(self.nc, msg.reply, out, {})
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("serving %s failed: %s", subject, exc)
                with contextlib.suppress(Exception):
                    await reply_error(self.nc, msg.reply, exc)

        async def _on_msg(msg: Msg) -> None:
            # one task per request: a long reply does not hold up the next request
            task = asyncio.create_task(_answer(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        await self._subscribe(subject, _on_msg, queue)

    async def subscribe(self, subject: str, listener: Listener) -> None:
        async def _on_msg(msg: Msg) -> None:
            try:
                await listener(msg.subject, msg.data)
            except Exception:
                log.exception("listener on %s failed", subject)

        await self._subscribe(subject, _on_msg, None)

    async def _subscribe(self, subject: str, cb: Any, queue: str | None) -> None:
        if self._closed:
            raise FabricError("the bus is closed")
        try:
            self._subs.append(await self.nc.subscribe(subject, queue=queue or "", cb=cb))
        except Exception as exc:
            raise fabric_error(f"subscribe to {subject}", exc) from exc

    async def send(self, subject: str, data: bytes) -> None:
        try:
            await self.nc.publish(subject, data)
        except Exception as exc:
            raise fabric_error(f"send on {subject}", exc) from exc

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._local is not None:
            await self._local.close()
        for view in self._domains.values():
            await view.close()
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs = []
        await cancel_all(list(self._tasks))
        if self._parent is not None:
            return  # a local() view: the connection belongs to its bus
        with contextlib.suppress(Exception):
            await wait_for(self.nc.close(), 5.0)


if TYPE_CHECKING:
    _conforms: type[Bus] = NatsBus
