"""The data broker (the seeds' DRB): finds and fetches local data for functions.

* :class:`DataBroker` checks a tenant's data operations against an :class:`AccessPolicy`
  and fetches them concurrently from named connectors;
* connectors (:class:`SQLiteConnector`, :class:`CSVConnector`, :class:`MemoryConnector`,
  or any :class:`Connector`) return columnar :class:`Dataset` objects.
"""

from fades.broker.base import CATEGORICAL, Connector, Dataset, DataSummary
from fades.broker.broker import DataBroker, FetchStats, OpStats
from fades.broker.connectors import (
    CSVConnector,
    MemoryConnector,
    SQLiteConnector,
    open_connector,
    register_connector,
)
from fades.broker.policy import AccessPolicy, TenantRule

__all__ = [
    "CATEGORICAL",
    "AccessPolicy",
    "CSVConnector",
    "Connector",
    "DataBroker",
    "DataSummary",
    "Dataset",
    "FetchStats",
    "MemoryConnector",
    "OpStats",
    "SQLiteConnector",
    "TenantRule",
    "open_connector",
    "register_connector",
]
