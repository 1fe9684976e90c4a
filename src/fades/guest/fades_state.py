"""Step graphs: an explicit way to write a stateful function that resumes mid-job.

A :class:`StepGraph` is a set of named steps and guarded transitions over a small key-value
state (``kv``: a dict of plain data). Each invocation of the function runs exactly one step,
then follows the first transition out of it whose guard holds. Kept in a module global of a
stateful persistent function (``state: {checkpoint: every}``), the graph's position and its
``kv`` are checkpointed after every step, so a job of many steps that is interrupted (a
crash, a move to another node) resumes at the step after the last one that completed, not
from its start::

    from fades_state import StepGraph

    graph = StepGraph(start="collect", kv={"n": 0, "total": 0.0})

    @graph.step("collect")
    def collect(kv, data, params):
        kv["n"] += 1
        kv["total"] += sum(data["t"].values)

    @graph.step("report")
    def report(kv, data, params):
        out = {"mean": kv["total"] / kv["n"]}
        kv.update(n=0, total=0.0)
        return out

    graph.transition("collect", "report", when=lambda kv: kv["n"] >= 10)
    graph.transition("collect", "collect")
    graph.transition("report", "collect")

    def main(data, params):
        return graph.run(data, params)

A step with no transition out of it ends the graph: later invocations run nothing and return
``{"done": True, ...}``. The module is pure standard library and also runs on the host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Step = Callable[[dict[str, Any], Any, Any], Any]
Guard = Callable[[dict[str, Any]], bool]

__all__ = ["StepGraph", "StepGraphError"]


class StepGraphError(ValueError):
    """A step graph was defined or driven wrongly (the message says how)."""


class StepGraph:
    """Named steps and guarded transitions over a key-value state (see the module docs)."""

    def __init__(self, start: str, kv: dict[str, Any] | None = None) -> None:
        self.start = start
        self.kv: dict[str, Any] = dict(kv or {})
        self.current: str | None = start
        self.steps_run = 0
        self._steps: dict[str, Step] = {}
        self._edges: dict[str, list[tuple[str, Guard | None]]] = {}

    def step(self, name: str) -> Callable[[Step], Step]:
        """Decorator: register ``fn(kv, data, params) -> output`` as the step ``name``."""

        def register(fn: Step) -> Step:
            if name in self._steps:
                raise StepGraphError(f"step {name!r} is defined twice")
            self._steps[name] = fn
            return fn

        return register

    def transition(self, src: str, dst: str, when: Guard | None = None) -> None:
        """After ``src``, go to ``dst`` if ``when(kv)`` holds (no guard: always). Transitions
        out of a step are tried in the order they were declared."""
        self._edges.setdefault(src, []).append((dst, when))

    def _check(self) -> None:
        names = set(self._steps)
        if self.start not in names:
            raise StepGraphError(f"the start step {self.start!r} is not defined")
        for src, edges in self._edges.items():
            for dst, _ in edges:
                if src not in names or dst not in names:
                    missing = src if src not in names else dst
                    raise StepGraphError(f"transition {src!r} -> {dst!r}: no step {missing!r}")

    @property
    def done(self) -> bool:
        return self.current is None

    def run(self, data: Any = None, params: Any = None) -> dict[str, Any]:
        """Run the current step once and move on; returns ``{"step", "output", "next",
        "steps"}`` (``{"done": True, "steps"}`` once the graph has ended)."""
        self._check()
        if self.current is None:
            return {"done": True, "steps": self.steps_run}
        name = self.current
        output = self._steps[name](self.kv, data, params)
        nxt: str | None = None
        edges = self._edges.get(name, [])
        for dst, guard in edges:
            if guard is None or guard(self.kv):
                nxt = dst
                break
        if edges and nxt is None:
            raise StepGraphError(f"no transition out of step {name!r} holds for this state")
        self.current = nxt
        self.steps_run += 1
        return {"step": name, "output": output, "next": nxt, "steps": self.steps_run}

    # --- capture (fades_capture calls these for a StepGraph held in a global) -------------
    def __fades_state__(self) -> dict[str, Any]:
        return {"current": self.current, "kv": self.kv, "steps": self.steps_run}

    def __fades_restore__(self, state: dict[str, Any]) -> None:
        current = state["current"]
        if current is not None and current not in self._steps:
            raise StepGraphError(f"the captured step {current!r} is not defined any more")
        self.current = current
        self.kv = dict(state["kv"])
        self.steps_run = int(state["steps"])
