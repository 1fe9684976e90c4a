"""What a site sends up to the hub: the site stream ``FADES_UP``.

At a site, :meth:`fades.bus.nats.NatsBus.publish_up` stores ``<subject>`` as
``fades.up.<site>.<subject>`` in the stream ``FADES_UP`` of the site's own JetStream domain
(it keeps accepting while the uplink is down). The site's forwarder
(:mod:`fades.fabric.forward`) publishes each message to the hub as ``<subject>`` with the
same message id, so the hub sees exactly what it would have seen from a direct publish (the
hub stream's de-duplication drops a message forwarded twice).

Limits of ``FADES_UP`` (the backlog a site can hold while cut off):
``FADES_UP_MAX_BYTES`` (default 1 GiB) and ``FADES_UP_MAX_AGE`` (seconds, default 7 days).
When full it refuses new messages (the node's outbox keeps them and retries), it never drops
unsent ones; forwarded messages leave it at the age limit.
"""

from __future__ import annotations

import os

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from fades.bus.base import DUPLICATE_WINDOW_S

UP_STREAM = "FADES_UP"
UP_PREFIX = "fades.up"
#: default bound on the bytes a site holds for the hub
UP_MAX_BYTES = 1024**3
#: default age after which a message leaves FADES_UP (long forwarded by then)
UP_MAX_AGE_S = 7 * 24 * 3600.0


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {raw!r}")
    return value


def up_subject(site: str, subject: str) -> str:
    """Where ``subject`` is stored at ``site``: ``fades.up.<site>.<subject>``."""
    return f"{UP_PREFIX}.{site}.{subject}"


def up_stream_config(site: str) -> StreamConfig:
    """``FADES_UP`` in the site's domain: limits retention (forwarded messages stay until
    the age limit, for inspection), bounded, discard new, de-duplicating message ids."""
    return StreamConfig(
        name=UP_STREAM,
        subjects=[f"{UP_PREFIX}.{site}.>"],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_bytes=int(_env_number("FADES_UP_MAX_BYTES", UP_MAX_BYTES)),
        max_age=_env_number("FADES_UP_MAX_AGE", UP_MAX_AGE_S),
        discard=DiscardPolicy.NEW,
        num_replicas=1,
    )
