"""Connect to NATS: the embedded server or an external one (URL plus credentials).

Settings come from arguments or the environment:

* ``FADES_NATS_URL``: one URL or a comma-separated list (``nats://user:pass@host:4222``);
* ``FADES_NATS_CREDS``: a ``.creds`` file (NGS / decentralised auth);
* ``FADES_NATS_TOKEN``: a server token (or in the URL: ``nats://TOKEN@host:4222``; a
  cluster that ``fades up`` started keeps its own in ``<folder>/nats.token``);
* ``FADES_NATS_DOMAIN``: the hub's JetStream domain, for a process connected to a site's leaf
  server (the hub's streams, buckets and object stores are reached through it);
* ``FADES_SITE``: the site (the leaf server's own JetStream domain) this process belongs to;
  what the site produces for the hub is stored there first (:meth:`Bus.publish_up`);
* ``FADES_NATS_REPLICAS``: how many copies of each stream, bucket and object store to keep
  (3 on a clustered hub; at most the number of hub servers).

The port is polled before connecting: a failed nats-py connect costs its 2 s reconnect wait.
Once connected, the client reconnects forever (``max_reconnect_attempts=-1``), so node agents
survive a NATS restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client as NATS

from fades.aiostop import wait_for
from fades.errors import FabricError
from fades.fabric.server import port_open

log = logging.getLogger("fades.fabric")

DEFAULT_URL = "nats://127.0.0.1:4222"


@dataclass(slots=True)
class FabricSettings:
    """Where the fabric is and how to authenticate."""

    url: str = DEFAULT_URL
    creds: str | None = None
    token: str | None = None
    #: the hub's JetStream domain (None: the server this process is connected to)
    domain: str | None = None
    #: the site's own JetStream domain, when connected to a site's leaf server
    site: str | None = None
    #: copies kept of each stream, bucket and object store this process creates
    replicas: int = 1

    @classmethod
    def from_env(
        cls,
        url: str | None = None,
        creds: str | None = None,
        token: str | None = None,
        *,
        domain: str | None = None,
        site: str | None = None,
        replicas: int | None = None,
    ) -> FabricSettings:
        raw = os.environ.get("FADES_NATS_REPLICAS") or "1"
        try:
            env_replicas = int(raw)
        except ValueError:
            raise FabricError(f"FADES_NATS_REPLICAS must be 1, 3 or 5, not {raw!r}") from None
        n = replicas if replicas is not None else env_replicas
        if n < 1 or n > 5:
            raise FabricError(f"replicas must be from 1 to 5, not {n}")
        return cls(
            url=url or os.environ.get("FADES_NATS_URL") or DEFAULT_URL,
            creds=creds or os.environ.get("FADES_NATS_CREDS") or None,
            token=token or os.environ.get("FADES_NATS_TOKEN") or None,
            domain=domain or os.environ.get("FADES_NATS_DOMAIN") or None,
            site=site or os.environ.get("FADES_SITE") or None,
            replicas=n,
        )

    @property
    def servers(self) -> list[str]:
        return [u.strip() for u in self.url.split(",") if u.strip()]


def redact(url: str) -> str:
    """``url`` with any password or token replaced by ``***`` (for messages and logs)."""
    url = re.sub(r"(//[^:/@,]+:)[^@/,]+@", r"\1***@", url)
    return re.sub(r"//[^:/@,]+@", "//***@", url)


def url_token(servers: list[str]) -> str | None:
    """The token carried in the servers' URLs (``nats://TOKEN@host``), if they carry one.

    Given to the client as its token, so that servers it discovers later (a cluster's other
    members, whose URLs come without credentials) get it too."""
    for s in servers:
        parts = urlsplit(s if "://" in s else f"nats://{s}")
        if parts.username and parts.password is None:
            return parts.username
    return None


def _reachable(servers: list[str]) -> bool:
    for s in servers:
        parts = urlsplit(s if "://" in s else f"nats://{s}")
        if port_open(parts.hostname or "127.0.0.1", parts.port or 4222):
            return True
    return False


async def connect(
    settings: FabricSettings | str | None = None,
    *,
    name: str = "fades",
    timeout: float = 10.0,
    reconnect_wait: float = 0.25,
) -> NATS:
    """Connect (waiting up to ``timeout`` for the server to come up) and return the client.

    Raises:
        FabricError: nothing answered in time, or the server refused the credentials.
    """
    if settings is None or isinstance(settings, str):
        settings = FabricSettings.from_env(settings)
    servers = settings.servers
    shown = redact(settings.url)
    deadline = time.monotonic() + timeout
    while not _reachable(servers):
        if time.monotonic() > deadline:
            raise FabricError(
                f"cannot reach NATS at {shown} (waited {timeout:.0f} s); start one with "
                "'fades up' or point FADES_NATS_URL at your server"
            )
        await asyncio.sleep(0.05)

    errors_seen: list[Exception] = []

    async def _err(e: Exception) -> None:
        errors_seen.append(e)
        log.debug("nats error: %s", e)

    client: list[NATS] = []

    async def _disc() -> None:
        if client and client[0].is_closed:
            return  # a clean close() also calls this; nothing reconnects
        log.warning("%s: disconnected from NATS, reconnecting", name)

    async def _reconn() -> None:
        log.warning("%s: reconnected to NATS", name)

    opts: dict[str, Any] = dict(
        name=name,
        servers=servers,
        connect_timeout=2,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=reconnect_wait,
        error_cb=_err,
        disconnected_cb=_disc,
        reconnected_cb=_reconn,
    )
    if settings.creds:
        opts["user_credentials"] = settings.creds
    token = settings.token or url_token(servers)
    if token:
        opts["token"] = token
    # nats-py retries a refused handshake (bad credentials) forever when reconnecting is
    # allowed, so the first connection gets a deadline of its own.
    try:
        client.append(await wait_for(nats.connect(**opts), max(2.0, deadline - time.monotonic())))
        return client[0]
    except TimeoutError:
        # the server's own refusal says more than the connection resets that follow it
        refusals = [
            e for e in errors_seen if re.search(r"authori|authenti|permission", str(e), re.I)
        ]
        shown_err = (refusals or errors_seen)[-1] if errors_seen else None
        last = f": {shown_err}" if shown_err is not None else ""
        raise FabricError(
            f"NATS at {shown} did not accept the connection (wrong credentials?){last}; "
            "a cluster started by `fades up` wants its token: "
            "export FADES_NATS_TOKEN=$(cat <folder>/nats.token)"
        ) from None
    except Exception as exc:  # nats raises several unrelated types here
        raise FabricError(f"cannot connect to NATS at {shown}: {exc}") from exc
