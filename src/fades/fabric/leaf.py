"""A site's own NATS server: a leaf node of the hub with its own JetStream domain.

Each edge site runs one :class:`EmbeddedLeaf`. Its node agents and MQTT sensors connect to
it, so ingest, local tasks and local pipeline stages keep working while the site's uplink is
down; what the site produces for the hub waits in the leaf's stream ``FADES_UP`` and is
forwarded to the hub when the link returns (see :mod:`fades.fabric.forward`).

The leaf reaches the hub through an :class:`~fades.fabric.uplink.Uplink` (a TCP relay
process), so a test or benchmark can cut and restore a site's link for real.
Files live in ``<home>/sites/<site>/``.
"""

from __future__ import annotations

import re
from pathlib import Path

from fades.fabric.server import EmbeddedNats
from fades.fabric.uplink import Uplink

#: the JetStream domain of the hub when sites are used
HUB_DOMAIN = "hub"
_SITE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def check_site(name: str) -> str:
    """A site name is a JetStream domain and a subject token: letters, digits, '-', '_'."""
    if not isinstance(name, str) or not _SITE.match(name) or name == HUB_DOMAIN:
        raise ValueError(
            f"site name must be 1-64 letters, digits, '-' or '_' (and not {HUB_DOMAIN!r}), "
            f"not {name!r}"
        )
    return name


def hub_leaf_config(port: int, host: str = "127.0.0.1") -> str:
    """The hub side: a leafnode listener that does not advertise its own address.

    ``no_advertise`` matters: otherwise a leaf learns the hub's leafnode URL from the hub and,
    once its uplink relay is cut, reconnects straight to the hub around the relay.
    """
    return f"leafnodes {{\n  listen: {host}:{port}\n  no_advertise: true\n}}"


class EmbeddedLeaf:
    """A site's leaf ``nats-server`` (JetStream domain = site, MQTT on) and its uplink.

    Args:
        home: the deployment's home; the leaf's files go in ``<home>/sites/<site>/``.
        site: the site's name, also its JetStream domain and ``server_name``.
        hub_leaf_urls: the hub's leafnode listen URLs (``nats-leaf://host:port``, comma-
            separated or a list).
        port / mqtt_port: client and MQTT ports (free ones if None).
        uplink_port: the relay's port (free if None; kept across cuts).
        sync_interval: passed to :class:`~fades.fabric.server.EmbeddedNats`.
        token: the deployment's NATS token: the leaf server requires it of its clients, and
            presents it to the hub (None: no authentication).
    """

    def __init__(
        self,
        home: str | Path,
        site: str,
        hub_leaf_urls: str | list[str],
        *,
        port: int | None = None,
        mqtt_port: int | None = None,
        uplink_port: int | None = None,
        sync_interval: str | None = "always",
        token: str | None = None,
    ) -> None:
        self.site = check_site(site)
        urls = hub_leaf_urls.split(",") if isinstance(hub_leaf_urls, str) else hub_leaf_urls
        self.hub_leaf_urls = [u.strip() for u in urls if u.strip()]
        if not self.hub_leaf_urls:
            raise ValueError("an EmbeddedLeaf needs the hub's leafnode URL(s)")
        self.dir = Path(home).expanduser().resolve() / "sites" / site
        self.uplink = Uplink(",".join(self.hub_leaf_urls), port=uplink_port)
        self.server = EmbeddedNats(
            self.dir,
            port=port,
            mqtt_port=mqtt_port,
            name=site,
            domain=site,
            sync_interval=sync_interval,
            token=token,
        )
        remote = self.server.peer_url(f"nats-leaf://{self.uplink.address}")
        self.server.extra_config = (
            f'leafnodes {{\n  reconnect: "1s"\n  remotes: [ {{ url: "{remote}" }} ]\n}}'
        )

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def mqtt_port(self) -> int | None:
        return self.server.mqtt_port

    @property
    def domain(self) -> str:
        return self.site

    @property
    def uplink_up(self) -> bool:
        return self.uplink.up

    def start(self, timeout: float = 30.0) -> EmbeddedLeaf:
        """Start the uplink relay, then the leaf server (it connects to the hub by itself)."""
        self.uplink.start()
        self.server.start(timeout)
        return self

    def cut_uplink(self) -> None:
        """Drop the site's link to the hub (the leaf keeps serving its site)."""
        self.uplink.cut()

    def restore_uplink(self) -> None:
        """Bring the link back (the leaf reconnects within about a second)."""
        self.uplink.restore()

    def stop(self) -> None:
        self.server.stop()
        self.uplink.cut()

    def kill(self) -> None:
        self.server.kill()

    @property
    def running(self) -> bool:
        return self.server.running

    def __enter__(self) -> EmbeddedLeaf:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "up" if self.uplink_up else "cut"
        where = f"{self.server.address}, mqtt={self.mqtt_port}"
        return f"EmbeddedLeaf({self.site}: {where}, uplink {state})"
