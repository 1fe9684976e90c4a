"""The data broker (the seeds' DRB): finds and fetches local data for functions.

* :class:`DataBroker` checks a tenant's data operations against an :class:`AccessPolicy`
  and fetches them concurrently from named connectors;
* connectors (:class:`SQLiteConnector`, :class:`CSVConnector`, :class:`MemoryConnector`,
  or any :class:`Connector`) return columnar :class:`Dataset` objects;
* :class:`FetchLimits` bound what one fetch may cost; a :class:`BoundedConnector` counts
  before it fetches and stops at a deadline.
"""

from fades.broker.base import (
    CATEGORICAL,
    BoundedConnector,
    Connector,
    Dataset,
    DataSummary,
    FetchLimits,
)
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
    "BoundedConnector",
    "CSVConnector",
    "Connector",
    "DataBroker",
    "DataSummary",
    "Dataset",
    "FetchLimits",
    "FetchStats",
    "MemoryConnector",
    "OpStats",
    "SQLiteConnector",
    "TenantRule",
    "open_connector",
    "register_connector",
]
