"""Why a data operation selected nothing: the location or sensor type it names that the
node does not hold, with the nearest names it does hold.

A connector that can list its (location, sensor type) pairs cheaply has ``sensor_keys()``:
the SQLite store reads its sensors table (written on ingest, pruned when readings are
cleared), the in-memory connector keeps the set as readings are added, a CSV file or a
packet capture lists its own once. Nothing here counts readings. The names offered are only
those the tenant's access policy lets it read.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from fades.broker.base import Connector
from fades.broker.policy import TenantRule
from fades.task import DataOp

#: names listed when none is close to the unknown one
MAX_LISTED = 8


def sensor_keys(conn: Connector) -> set[tuple[str, str]] | None:
    """The (location, sensor type) pairs ``conn`` holds, or None if it cannot say cheaply."""
    keys = getattr(conn, "sensor_keys", None)
    if keys is None:
        return None
    found = keys()
    return {(str(loc), str(st)) for loc, st in found}


def _quote(names: Iterable[str]) -> str:
    return ", ".join(repr(n[:60]) for n in names)


def _or(names: list[str]) -> str:
    more = " ..." if len(names) > 4 else ""
    return " or ".join(repr(n[:60]) for n in names[:4]) + more


def _known(value: str, known: set[str]) -> str:
    near = difflib.get_close_matches(value, sorted(known), n=3, cutoff=0.6)
    if near:
        return f"nearest: {_quote(near)}"
    if not known:
        return "it holds none"
    listed = sorted(known)[:MAX_LISTED]
    more = f" and {len(known) - len(listed)} more" if len(known) > len(listed) else ""
    return f"it holds {_quote(listed)}{more}"


def why_empty(op: DataOp, keys: set[tuple[str, str]], rule: TenantRule | None) -> str | None:
    """The unknown locations and sensor types ``op`` names, or that no sensor has both, in
    one line; None when every name is known (the time window or device selected nothing)."""
    if rule is None:  # the tenant may read nothing: name nothing the node holds
        return None
    visible = {k for k in keys if rule.allows(*k)}
    locations = {loc for loc, _ in visible}
    types = {st for _, st in visible}
    problems = []
    for what, asked, known in (
        ("location", op.select.locations, locations),
        ("sensor type", op.select.sensor_types, types),
    ):
        for value in asked or []:
            if value not in known:
                problems.append(
                    f"{what} {value[:60]!r} is not on this node ({_known(value, known)})"
                )
    if problems:
        return "; ".join(problems)
    asked_l, asked_t = op.select.locations, op.select.sensor_types
    if asked_l and asked_t and not any((loc, st) in visible for loc in asked_l for st in asked_t):
        at = {st for loc, st in visible if loc in asked_l}
        return (
            f"no {_or(asked_t)} sensor at {_or(asked_l)} on this node "
            f"(sensor types there: {_quote(sorted(at)[:MAX_LISTED]) or 'none'})"
        )
    return None
