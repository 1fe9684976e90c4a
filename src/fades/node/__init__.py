"""A node: its orchestrator, broker, function store and local data, assembled from one folder.

A node's folder (``FADES_HOME``, or ``--home``) holds::

    trusted/*.pub   keys whose signatures the node accepts
    artifacts/      verified artifacts (functions and the Python runtime)
    readings.db     the local SQLite time-series store (connector "sqlite")
    tasks.db        accepted tasks, results, invocations
    policy.yaml     optional per-tenant access policy (absent: every tenant reads everything)
    node.yaml       optional settings: capacity, scheduling, extra connectors
    limits.yaml     optional limits on a task's input (see :mod:`fades.node.limits`)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fades import paths
from fades.broker import AccessPolicy, DataBroker, SQLiteConnector, open_connector
from fades.broker.base import Connector
from fades.errors import OrchestratorError
from fades.functions.keys import TrustStore, install_trusted
from fades.functions.store import FunctionStore
from fades.node.limits import NodeLimits
from fades.node.orchestrator import Orchestrator

__all__ = ["Node", "NodeConfig", "Orchestrator"]


@dataclass(slots=True)
class NodeConfig:
    """Settings read from ``node.yaml`` (all optional)."""

    capacity: int = 2
    scheduling: str = "fifo"
    connectors: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ready Python instances per worker: ``{min: 1, max: 4, max_mib: 64}`` (any subset)
    python_pool: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> NodeConfig:
        if not path.exists():
            return cls()
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise OrchestratorError(f"{path}: expected a mapping of settings")
        unknown = set(raw) - {"capacity", "scheduling", "connectors", "python_pool"}
        if unknown:
            raise OrchestratorError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
        return cls(
            capacity=int(raw.get("capacity", 2)),
            scheduling=str(raw.get("scheduling", "fifo")),
            connectors=dict(raw.get("connectors") or {}),
            python_pool=dict(raw.get("python_pool") or {}),
        )


class Node:
    """Everything one edge node runs, opened from its folder."""

    def __init__(
        self,
        home: str | Path | None = None,
        *,
        capacity: int | None = None,
        scheduling: str | None = None,
        autostart: bool = True,
    ) -> None:
        self.home = Path(home).expanduser() if home is not None else paths.home()
        self.home.mkdir(parents=True, exist_ok=True)
        self.config = NodeConfig.load(self.home / "node.yaml")
        self.trust = TrustStore.from_dir(self.home / "trusted")
        self.functions = FunctionStore(self.home / "artifacts", self.trust)
        self.readings = SQLiteConnector(self.home / "readings.db")
        connectors: dict[str, Connector] = {"sqlite": self.readings}
        for name, spec in self.config.connectors.items():
            spec = dict(spec)
            kind = spec.pop("kind", name)
            connectors[name] = open_connector(kind, **spec)
        policy_path = self.home / "policy.yaml"
        policy = AccessPolicy.from_file(policy_path) if policy_path.exists() else None
        self.limits = NodeLimits.load(self.home)
        self.broker = DataBroker(connectors, policy, limits=self.limits.fetch_limits())
        self.orchestrator = Orchestrator(
            broker=self.broker,
            functions=self.functions,
            db=self.home / "tasks.db",
            capacity=capacity or self.config.capacity,
            policy=scheduling or self.config.scheduling,
            autostart=autostart,
            limits=self.limits,
            python_pool=self.config.python_pool,
        )

    def trust_key(self, public_key_file: str | Path) -> str:
        """Copy a public key into ``trusted/`` and trust it from now on."""
        kid = install_trusted(self.home / "trusted", public_key_file)
        self.trust.add_file(public_key_file)
        return kid

    def close(self) -> None:
        self.orchestrator.close()
        self.broker.close()
        self.readings.close()

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
