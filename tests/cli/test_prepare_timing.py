"""A task whose function had to be made ready on the node (the Python runtime loaded and
compiled for it) shows that time as a ``prepare`` row, where timing rows are shown."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fades.functions.artifact import Artifact
from fades.node.orchestrator import PREPARE_ROW_S

SRC = "def main(data, params):\n    return len(data['t'])\n"


def test_a_first_run_that_loads_the_runtime_has_a_prepare_row(
    make_node: Callable[..., Any],
    make_task: Callable[..., dict[str, Any]],
    runtime_artifact: Artifact,
    capsys: Any,
) -> None:
    from fades.cli import render

    # like a cluster's node: it starts without the runtime, which arrives with the first task
    node = make_node(functions={"f": SRC}, runtime=False)
    node.functions.add(runtime_artifact)
    first = node.orchestrator.run(make_task("f", memory_mib=64), timeout=300)
    assert first.status == "done", first
    prepare = first.timing.get("prepare")
    assert prepare is not None and prepare >= PREPARE_ROW_S, first.timing
    phases = sum(v for k, v in first.timing.items() if k not in ("queue", "total", "prepare"))
    assert phases + prepare <= first.timing["total"] * 1.01 + 1e-3, first.timing

    render.show_outcome(first.to_dict(), title="first")
    shown = capsys.readouterr().out
    rows = [line.split()[1] for line in shown.splitlines() if line.startswith("│")]
    assert rows.index("prepare") == rows.index("queue") + 1, shown
    assert rows.index("prepare") < rows.index("retrieval")
