"""Create (idempotently) the streams and buckets the controller and nodes share, on a Bus."""

from __future__ import annotations

from fades.bus.base import DUPLICATE_WINDOW_S, Bus, KeyValue
from fades.fabric.subjects import NODES_BUCKET, RESULTS_STREAM, TASKS_STREAM

__all__ = ["DUPLICATE_WINDOW_S", "ensure_streams", "nodes_bucket"]


async def ensure_streams(bus: Bus) -> None:
    """Tasks and results streams: durable, work-queue retention, de-duplication by id."""
    await bus.stream(TASKS_STREAM, ["fades.task.>"])
    await bus.stream(RESULTS_STREAM, ["fades.result.>"])


async def nodes_bucket(bus: Bus) -> KeyValue:
    """The node registry bucket (one key per node; the value is its latest heartbeat)."""
    return await bus.kv(NODES_BUCKET)
