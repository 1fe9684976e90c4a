"""The edge sites of a :class:`~fades.cluster.LocalCluster` (``sites=True``).

One site per node, named after it: a leaf ``nats-server`` (its own JetStream domain and MQTT
gateway, files in ``<home>/sites/<site>/``) reaching the hub through an uplink relay that
:meth:`SiteParts.cut_uplink` kills and :meth:`SiteParts.restore_uplink` starts again.
"""

from __future__ import annotations

from pathlib import Path

from fades.errors import FadesError
from fades.fabric.hub import EmbeddedHub
from fades.fabric.leaf import EmbeddedLeaf


class SiteParts:
    """Site methods of LocalCluster (its ``names``, ``home``, ``host``, ``sites`` and
    ``hub``)."""

    names: list[str]
    home: Path
    host: str
    sites: dict[str, EmbeddedLeaf]
    hub: EmbeddedHub

    def hub_leaf_urls(self) -> list[str]:
        """The hub's leafnode URLs (the sites' leaf servers connect there)."""
        return list(self.hub.leaf_urls)

    def start_sites(self) -> None:
        """One leaf server per node (site = node name), each behind its own uplink relay."""
        for name in self.names:
            leaf = self.sites.get(name) or EmbeddedLeaf(
                self.home, name, self.hub_leaf_urls(), token=self.hub.token
            )
            leaf.start()
            self.sites[name] = leaf

    def site(self, name: str) -> EmbeddedLeaf:
        try:
            return self.sites[name]
        except KeyError:
            known = ", ".join(self.sites) or "none (sites=False)"
            raise FadesError(f"no site named {name!r} (sites: {known})") from None

    def cut_uplink(self, site: str) -> None:
        """Cut ``site``'s link to the hub (its leaf, node and sensors keep running)."""
        self.site(site).cut_uplink()

    def restore_uplink(self, site: str) -> None:
        self.site(site).restore_uplink()

    def stop_sites(self) -> None:
        for leaf in self.sites.values():
            leaf.stop()
