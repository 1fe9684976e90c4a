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

__all__ = ["MAX_CAPACITY", "Node", "NodeConfig", "Orchestrator"]

#: the most tasks ``node.yaml``'s ``capacity`` may run at once (each has a sandbox process)
MAX_CAPACITY = 64


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
        """Read ``node.yaml``; a mistake in it is one :class:`OrchestratorError` line."""
        if not path.exists():
            return cls()
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            why = " ".join(str(exc).split())
            raise OrchestratorError(f"{path}: not valid YAML: {why}") from None
        if not isinstance(raw, dict):
            raise OrchestratorError(f"{path}: expected a mapping of settings")
        unknown = set(raw) - {"capacity", "scheduling", "connectors", "python_pool"}
        if unknown:
            raise OrchestratorError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
        capacity = raw.get("capacity", 2)
        if type(capacity) is not int or not 1 <= capacity <= MAX_CAPACITY:
            raise OrchestratorError(
                f"{path}: capacity must be an integer from 1 to {MAX_CAPACITY} "
                f"(tasks run at once, one sandbox process each), not {capacity!r}"
            )
        scheduling = raw.get("scheduling", "fifo")
        if not isinstance(scheduling, str):
            raise OrchestratorError(f"{path}: scheduling must be a name, not {scheduling!r}")
        connectors = raw.get("connectors") or {}
        if not isinstance(connectors, dict) or not all(
            isinstance(v, dict) for v in connectors.values()
        ):
            raise OrchestratorError(
                f"{path}: connectors must map each name to its options "
                "(e.g. lab_csv: {kind: csv, path: /data/lab.csv})"
            )
        pool = raw.get("python_pool") or {}
        if not isinstance(pool, dict):
            raise OrchestratorError(f"{path}: python_pool must be a mapping, not {pool!r}")
        return cls(
            capacity=capacity, scheduling=scheduling, connectors=connectors, python_pool=pool
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
