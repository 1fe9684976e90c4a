"""What an automatic pipeline's ``run.on_reading`` pattern can match.

A sensor reading is published on ``sensors.<node>.<location>.<sensor_type>``: four tokens.
:func:`pattern_problem` refuses a pattern that can match no such subject whatever nodes
exist (its spec is wrong); :func:`unmatched` says, when a pipeline is submitted, that no
registered node's sensors match it now (a warning: a node may join or gain data later).
"""

from __future__ import annotations

from collections.abc import Iterable

from fades.bus.memory import matches
from fades.fabric.protocol import NodeInfo

#: tokens in a reading's subject: sensors, node, location, sensor type
READING_TOKENS = 4
READING_FORM = "sensors.<node>.<location>.<sensor_type>"


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` (a valid subject pattern under ``sensors.``) can never match a
    reading's subject, or None."""
    tokens = pattern.split(".")
    if tokens[-1] == ">":
        if len(tokens) > READING_TOKENS:
            return (
                f"can never match a reading: readings are published on {READING_FORM} "
                f"({READING_TOKENS} tokens) and {pattern!r} needs at least {len(tokens)}"
            )
        return None
    if len(tokens) != READING_TOKENS:
        return (
            f"can never match a reading: readings are published on {READING_FORM} "
            f"({READING_TOKENS} tokens) and {pattern!r} has {len(tokens)}"
        )
    return None


def unmatched(pattern: str, nodes: Iterable[NodeInfo]) -> str | None:
    """A warning when no registered node's sensors match ``pattern``, or None."""
    nodes = list(nodes)
    want = pattern.split(".")[1] if "." in pattern else ">"
    if want not in ("*", ">") and want not in {n.name for n in nodes}:
        return (
            f"run.on_reading {pattern!r} names node {want!r}, which is not registered: "
            "no run starts until it is"
        )
    for n in nodes:
        for d in n.data:
            if matches(pattern, f"sensors.{n.name}.{d.location}.{d.sensor_type}"):
                return None
    return (
        f"run.on_reading {pattern!r} matches no sensor of the {len(nodes)} registered "
        f"node(s) (readings are {READING_FORM}): no run starts until one does"
    )
