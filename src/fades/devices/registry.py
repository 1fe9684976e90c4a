"""Where devices are known: the node reads its folder, the controller reads the registry.

A node agent calls :func:`node_devices` at start (a bad ``devices.yaml`` stops it with one
line) and puts the result in its registry entry. The controller answers "which devices may
this tenant see" (:func:`visible_devices`) and "which device is that"
(:func:`find_device`) from the ``fades_nodes`` registry it already watches, so a node that
changes its devices is seen on its next heartbeat.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fades.devices.spec import Device, from_entry, load_devices, registry_entries
from fades.errors import UnknownDevice

if TYPE_CHECKING:
    from fades.controller.registry import Registry
    from fades.node import Node


def node_devices(node: Node, name: str) -> list[dict[str, Any]]:
    """The registry entries of the devices declared in ``node``'s folder."""
    return registry_entries(load_devices(node.home, name), node.broker.policy)


def _sees(entry: dict[str, Any], tenant: str) -> bool:
    readers = entry.get("readers")
    return readers is None or tenant in readers


def visible_devices(registry: Registry, tenant: str) -> list[tuple[Device, dict[str, Any]]]:
    """Every device of every registered node that ``tenant`` may see, by node then name."""
    out: list[tuple[Device, dict[str, Any]]] = []
    for name in sorted(registry.nodes):
        entry = registry.nodes[name]
        for raw in entry.info.devices:
            if isinstance(raw, dict) and "device" in raw and _sees(raw, tenant):
                out.append((from_entry(name, raw), raw))
    return out


def find_device(registry: Registry, node: str, device: str) -> Device:
    """The device ``node/device`` as its node declared it.

    Raises:
        UnknownDevice: no such node, or the node declares no such device.
    """
    entry = registry.get(node)
    if entry is None:
        raise UnknownDevice(f"no node {node!r} is registered")
    for raw in entry.info.devices:
        if isinstance(raw, dict) and raw.get("device") == device:
            return from_entry(node, raw)
    names = sorted(str(r.get("device")) for r in entry.info.devices if isinstance(r, dict))
    shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    raise UnknownDevice(
        f"node {node!r} declares no device {device!r}"
        + (f" (it has: {shown})" if names else " (it declares no devices)")
    )
