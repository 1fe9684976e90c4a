"""Key-value writes into another JetStream domain (a node at a site writing the hub's buckets).

nats-py 2.16 publishes a bucket's writes (put, create, update, delete) on the bare
``$KV.<bucket>.<key>`` subject even when its JetStream context has a domain, and a leaf
server cannot route that subject to the hub's domain (``NoStreamResponseError``; nats.py
issue 1010). :class:`DomainWrites` wraps the bucket's JetStream context so that those
publishes go to ``$JS.<domain>.API.$KV.<bucket>.<key>``, as nats.go does; reads keep the bare
subjects (they already go through the domain's API).
"""

from __future__ import annotations

from typing import Any


class DomainWrites:
    """A JetStream context whose publishes on ``$KV.`` go through a domain's API prefix."""

    def __init__(self, js: Any, prefix: str) -> None:
        self._inner = js
        self._prefix = prefix

    async def publish(self, subject: str, *args: Any, **kwargs: Any) -> Any:
        if subject.startswith("$KV."):
            subject = self._prefix + subject
        return await self._inner.publish(subject, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
