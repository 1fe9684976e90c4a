"""Checks of a pipeline spec that span fields: its stage graph and its NATS subjects.

:func:`graph_problems` finds what is wrong with a graph of stages: a repeated name, an unknown
``after``, a stage connected to no other (it would be both a start and a finale), a cycle
(named along the data flow, ``a -> b -> a``), a gather timeout on a stage with one input, a
guard on a fan-in reading a name that is not one of its inputs. :func:`topo_order` orders
the stages so that each comes after its upstreams; :func:`subject_problem` checks a subject.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from fades.pipelines.guard import compile_guard
from fades.tasktext import clip

if TYPE_CHECKING:
    from fades.pipelines.spec import StageSpec

#: Longest ``publish`` or ``on_reading`` subject.
MAX_SUBJECT_CHARS = 256
_TOKEN_RE = re.compile(r"^[^\s.*>]+$")


def input_name(stage: str) -> str:
    """The name under which a downstream function and guard see ``stage``'s value: the stage
    name with ``-`` as ``_``, and a leading ``_`` if it starts with a digit."""
    name = stage.replace("-", "_")
    return f"_{name}" if name[:1].isdigit() else name


def subject_problem(subject: str, *, wildcards: bool) -> str | None:
    """What is wrong with a NATS subject (or pattern, with ``wildcards``), or None."""
    if not subject or len(subject) > MAX_SUBJECT_CHARS:
        return f"must be 1-{MAX_SUBJECT_CHARS} characters"
    tokens = subject.split(".")
    for i, tok in enumerate(tokens):
        if wildcards and (tok == "*" or (tok == ">" and i == len(tokens) - 1)):
            continue
        if tok in ("*", ">"):
            return (
                "'>' may only be the last token"
                if wildcards
                else "must not contain wildcards ('*' or '>')"
            )
        if not _TOKEN_RE.match(tok):
            return (
                f"token {clip(tok, 40)!r} is not valid: tokens are separated by single dots "
                "and hold no spaces"
                + (", and '*' or '>' only as a whole token" if wildcards else " or wildcards")
            )
    return None


def topo_order(graph: list[tuple[str, list[str]]]) -> list[str] | None:
    """Kahn's order of ``(name, after)`` pairs, or None if they hold a cycle."""
    pending = {name: {a for a in after if a != name} for name, after in graph}
    order: list[str] = []
    while pending:
        ready = [n for n, deps in pending.items() if not deps]
        if not ready:
            return None
        for n in ready:
            del pending[n]
            order.append(n)
        for deps in pending.values():
            deps.difference_update(ready)
    return order


def _cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One cycle in the data flow (``[a, b, a]`` when b comes after a and a after b)."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    for root in graph:
        if state.get(root):
            continue
        path: list[str] = [root]
        iters = [iter(graph[root])]
        state[root] = 1
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
            elif state.get(nxt) == 1:
                cyc = [*path[path.index(nxt) :], nxt]
                return cyc[::-1]  # ``after`` points upstream; show the data flow
            elif not state.get(nxt) and nxt in graph:
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(graph[nxt]))
    return None


def graph_problems(stages: Iterable[StageSpec]) -> list[tuple[str, str]]:
    """What is wrong with the graph of ``stages`` as ``(field, reason)`` pairs."""
    stages = list(stages)
    problems: list[tuple[str, str]] = []
    names = [s.name for s in stages]
    known = set(names)
    for n in sorted({n for n in names if names.count(n) > 1}):
        problems.append((f"stages.{n}.name", f"{names.count(n)} stages are named {n!r}"))
    listing = clip(", ".join(names), 200)
    for s in stages:
        for a in s.after:
            if a not in known:
                problems.append(
                    (f"stages.{s.name}.after", f"unknown stage {a!r} (stages: {listing})")
                )
    if problems:
        return problems
    fed = {a for s in stages for a in s.after}
    for s in stages:
        if len(stages) > 1 and not s.after and s.name not in fed:
            problems.append(
                (
                    f"stages.{s.name}.after",
                    "the stage is not connected: it comes after no stage and no stage "
                    "comes after it",
                )
            )
    if problems:
        return problems
    cyc = _cycle({s.name: s.after for s in stages})
    if cyc:
        problems.append((f"stages.{cyc[0]}.after", f"cycle: {' -> '.join(cyc)}"))
        return problems
    by_name = {s.name: s for s in stages}
    for s in stages:
        fan_in = len(s.after) > 1 or any(by_name[a].scatter for a in s.after)
        if s.gather.timeout_s is not None and not fan_in:
            problems.append(
                (
                    f"stages.{s.name}.gather.timeout_s",
                    "applies only to a stage with several inputs (several 'after', or after a "
                    "scattered stage)",
                )
            )
        if s.when is not None and len(s.after) > 1:
            names = [input_name(a) for a in s.after]
            stray = sorted(compile_guard(s.when).names - set(names))
            if stray:
                problems.append(
                    (
                        f"stages.{s.name}.when",
                        f"unknown name(s) {', '.join(stray)}: a stage with several inputs "
                        f"reads them by stage name ({', '.join(names)})",
                    )
                )
    return problems
