"""The node's request/reply services: remote retrieval (``fades.node.<name>.query``) and
liveness (``fades.node.<name>.ping``).

A query returns exactly the FDS1 blob a task at the edge would get (the tenant's access
policy applies), with :class:`~fades.fabric.protocol.QueryMeta`, as
:func:`~fades.fabric.protocol.encode_query_reply`; the Bus carries it in flow-controlled
parts. Retrieval and encoding run in a thread. A ping answers with the registry entry.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from fades.fabric.protocol import QueryMeta, QueryRequest, encode_query_reply
from fades.fabric.subjects import ping_subject, query_subject
from fades.sandbox.wire import encode

if TYPE_CHECKING:
    from fades.node.agent import NodeAgent


class QueryServer:
    """Serves queries and pings for one agent."""

    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent

    async def start(self) -> None:
        bus = self.agent.require_bus()
        await bus.serve(ping_subject(self.agent.name), self._ping)
        await bus.serve(query_subject(self.agent.name), self._query)
        from fades.node.agent.control import serve_control

        await serve_control(self.agent)  # fades.node.<name>.control (cancel)

    async def _ping(self, _: bytes) -> bytes:
        return self.agent.registry.info().encode()

    async def _query(self, data: bytes) -> bytes:
        req = QueryRequest.decode(data)
        return await asyncio.to_thread(self.answer, req)

    def answer(self, req: QueryRequest) -> bytes:
        """Fetch (policy applies) and encode exactly as a task at the edge would get it."""
        t0 = time.perf_counter()
        datasets, _ = self.agent.require_node().broker.fetch(req.tenant, list(req.data))
        t1 = time.perf_counter()
        blob = encode(datasets, req.params)
        t2 = time.perf_counter()
        meta = QueryMeta(
            rows=sum(len(ds) for ds in datasets.values()),
            bytes_read=sum(ds.nbytes for ds in datasets.values()),
            blob_bytes=len(blob),
            retrieval_s=t1 - t0,
            encode_s=t2 - t1,
        )
        return encode_query_reply(blob, meta)
