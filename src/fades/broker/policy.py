"""Per-tenant access policy: which locations and sensor types a tenant may read.

Policy file (YAML or JSON)::

    tenants:
      acme:
        locations: [room1, room2]
        sensor_types: [temperature, humidity]
      admin:
        locations: "*"          # "*" means every location
        sensor_types: "*"

A tenant that is not listed may read nothing. A data operation whose selector leaves the
locations (or sensor types) open, i.e. asks for all of them, is allowed only for a tenant
that may read all of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fades.broker.base import DataSummary
from fades.errors import AccessDenied, BrokerError
from fades.task import DataOp

ALL = "*"


@dataclass(frozen=True, slots=True)
class TenantRule:
    """What one tenant may read; ``None`` means everything."""

    locations: frozenset[str] | None
    sensor_types: frozenset[str] | None

    def allows(self, location: str, sensor_type: str) -> bool:
        return (self.locations is None or location in self.locations) and (
            self.sensor_types is None or sensor_type in self.sensor_types
        )


def _names(tenant: str, field: str, raw: Any) -> frozenset[str] | None:
    if raw == ALL:
        return None
    if isinstance(raw, str):
        return frozenset([raw])
    if isinstance(raw, list) and all(isinstance(x, str) and x for x in raw):
        return None if ALL in raw else frozenset(raw)
    raise BrokerError(
        f"access policy: tenant {tenant!r}: {field} must be '*' or a list of names, got {raw!r}",
        tenant=tenant,
    )


def _fmt(names: Iterable[str] | None) -> str:
    return "all" if names is None else ", ".join(sorted(names)) or "none"


class AccessPolicy:
    """Which tenant may read which locations and sensor types."""

    def __init__(self, tenants: Mapping[str, TenantRule] | None = None) -> None:
        self.tenants: dict[str, TenantRule] = dict(tenants or {})

    @classmethod
    def allow_all(cls) -> AccessPolicy:
        """A policy that lets every tenant read everything (single-user setups)."""
        return _AllowAll()

    @classmethod
    def from_mapping(cls, obj: Mapping[str, Any]) -> AccessPolicy:
        """Build from ``{"tenants": {name: {"locations": ..., "sensor_types": ...}}}``.

        Raises:
            BrokerError: naming the malformed entry.
        """
        if not isinstance(obj, Mapping) or not isinstance(obj.get("tenants", {}), Mapping):
            raise BrokerError("access policy must be a mapping with a 'tenants' mapping")
        rules: dict[str, TenantRule] = {}
        for name, entry in (obj.get("tenants") or {}).items():
            if not isinstance(entry, Mapping):
                raise BrokerError(
                    f"access policy: tenant {name!r} must map to locations and sensor_types",
                    tenant=str(name),
                )
            extra = sorted(set(entry) - {"locations", "sensor_types"})
            if extra:
                raise BrokerError(
                    f"access policy: tenant {name!r} has unknown key(s) {', '.join(extra)}; "
                    "expected locations and sensor_types",
                    tenant=str(name),
                )
            for key in ("locations", "sensor_types"):
                if key not in entry:
                    raise BrokerError(
                        f"access policy: tenant {name!r} lacks {key!r} (use '*' for all)",
                        tenant=str(name),
                    )
            rules[str(name)] = TenantRule(
                locations=_names(str(name), "locations", entry["locations"]),
                sensor_types=_names(str(name), "sensor_types", entry["sensor_types"]),
            )
        return cls(rules)

    @classmethod
    def from_file(cls, path: str | Path) -> AccessPolicy:
        """Read a YAML (or JSON) policy file."""
        p = Path(path)
        try:
            obj = yaml.safe_load(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise BrokerError(f"cannot read access policy {p}: {exc.strerror}") from exc
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            why = " ".join(str(exc).split())  # one line: PyYAML's message spans several
            raise BrokerError(f"access policy {p} is not valid YAML: {why}") from exc
        return cls.from_mapping(obj or {})

    @classmethod
    def load(cls, source: str | Path | Mapping[str, Any]) -> AccessPolicy:
        """From a mapping or a file path."""
        if isinstance(source, Mapping):
            return cls.from_mapping(source)
        return cls.from_file(source)

    def rule(self, tenant: str) -> TenantRule | None:
        """The tenant's rule, or ``None`` if the tenant may read nothing."""
        return self.tenants.get(tenant)

    def check(self, tenant: str, op: DataOp) -> None:
        """Allow ``op`` for ``tenant`` or raise :class:`AccessDenied` naming what is refused."""
        rule = self.rule(tenant)
        if rule is None:
            raise AccessDenied(
                f"data op {op.name!r}: tenant {tenant!r} has no access policy on this node, "
                "so it may not read any data",
                tenant=tenant,
                op=op.name,
            )
        problems: list[str] = []
        for what, asked, allowed in (
            ("location", op.select.locations, rule.locations),
            ("sensor type", op.select.sensor_types, rule.sensor_types),
        ):
            if allowed is None:
                continue
            if asked is None:
                problems.append(f"may not read all {what}s; name them (allowed: {_fmt(allowed)})")
                continue
            refused = sorted(set(asked) - allowed)
            if refused:
                problems.append(
                    f"may not read {what}(s) {', '.join(refused)} (allowed: {_fmt(allowed)})"
                )
        if problems:
            raise AccessDenied(
                f"data op {op.name!r}: tenant {tenant!r} " + "; and ".join(problems),
                tenant=tenant,
                op=op.name,
            )

    def visible(self, tenant: str, summaries: Iterable[DataSummary]) -> list[DataSummary]:
        """The summaries ``tenant`` may see."""
        rule = self.rule(tenant)
        if rule is None:
            return []
        return [s for s in summaries if rule.allows(s.location, s.sensor_type)]

    def to_mapping(self) -> dict[str, Any]:
        """The policy as a mapping that :meth:`from_mapping` reads back."""
        return {
            "tenants": {
                name: {
                    "locations": ALL if r.locations is None else sorted(r.locations),
                    "sensor_types": ALL if r.sensor_types is None else sorted(r.sensor_types),
                }
                for name, r in sorted(self.tenants.items())
            }
        }


class _AllowAll(AccessPolicy):
    """Every tenant may read everything."""

    _RULE = TenantRule(locations=None, sensor_types=None)

    def rule(self, tenant: str) -> TenantRule | None:
        return self._RULE

    def to_mapping(self) -> dict[str, Any]:
        return {"tenants": {}, "allow_all": True}
