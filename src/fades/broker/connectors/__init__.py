"""Connectors: the data sources a node's broker can fetch from.

Each backend lives in its own module and implements the
:class:`~fades.broker.base.Connector` protocol (``fetch(select)`` and ``describe()``).
:func:`open_connector` builds one by kind name, so that configuration files can name them;
further backends (MQTT/NATS subjects, InfluxDB, ...) register here without touching the
broker or the orchestrator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fades.broker.base import Connector
from fades.broker.connectors.csv import CSVConnector
from fades.broker.connectors.memory import MemoryConnector
from fades.broker.connectors.packets import PacketConnector
from fades.broker.connectors.sqlite import SQLiteConnector
from fades.errors import ConnectorError

CONNECTOR_KINDS: dict[str, Callable[..., Connector]] = {
    "sqlite": SQLiteConnector,
    "csv": CSVConnector,
    "memory": MemoryConnector,
    "packets": PacketConnector,
}


def register_connector(kind: str, factory: Callable[..., Connector]) -> None:
    """Make ``open_connector(kind, ...)`` build connectors with ``factory``."""
    CONNECTOR_KINDS[kind] = factory


def open_connector(kind: str, **options: Any) -> Connector:
    """Build a connector of ``kind`` ("sqlite", "csv", "memory", ...) from ``options``.

    Raises:
        ConnectorError: for an unknown kind (naming the known ones) or bad options.
    """
    factory = CONNECTOR_KINDS.get(kind)
    if factory is None:
        raise ConnectorError(
            f"unknown connector kind {kind!r}; known kinds: {', '.join(sorted(CONNECTOR_KINDS))}",
            connector=kind,
        )
    try:
        return factory(**options)
    except TypeError as exc:
        raise ConnectorError(
            f"bad options for connector kind {kind!r}: {exc}", connector=kind
        ) from exc


__all__ = [
    "CONNECTOR_KINDS",
    "CSVConnector",
    "MemoryConnector",
    "PacketConnector",
    "SQLiteConnector",
    "open_connector",
    "register_connector",
]
