"""Create (idempotently) the streams and buckets the controller and nodes share."""

from __future__ import annotations

from nats.js.api import (
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from fades.fabric.subjects import NODES_BUCKET, RESULTS_STREAM, TASKS_STREAM

#: JetStream de-duplicates messages with the same Nats-Msg-Id inside this window (seconds)
DUPLICATE_WINDOW_S = 600.0


async def ensure_streams(js: JetStreamContext) -> None:
    """Tasks and results streams: file storage, work-queue retention, de-duplication by id."""
    for name, subjects in (
        (TASKS_STREAM, ["fades.task.>"]),
        (RESULTS_STREAM, ["fades.result.>"]),
    ):
        cfg = StreamConfig(
            name=name,
            subjects=subjects,
            storage=StorageType.FILE,
            retention=RetentionPolicy.WORK_QUEUE,
            duplicate_window=DUPLICATE_WINDOW_S,
        )
        try:
            await js.stream_info(name)
        except Exception:
            await js.add_stream(cfg)


async def nodes_bucket(js: JetStreamContext) -> KeyValue:
    """The node registry bucket (one key per node; the value is its latest heartbeat)."""
    try:
        return await js.key_value(NODES_BUCKET)
    except Exception:
        return await js.create_key_value(
            KeyValueConfig(bucket=NODES_BUCKET, history=1, storage=StorageType.FILE)
        )
