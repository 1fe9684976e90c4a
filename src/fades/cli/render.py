"""The one renderer of a finished task, for ``task run`` (a node's record) and ``task
submit --wait`` (the controller's view): status, error, result, logs, timing, bytes.

It takes a :class:`~fades.outcome.Outcome` or its dict form (the older record and HTTP
shapes, whose task id is ``id`` or ``task_id``, are accepted too). Everything in it came
from a function or a remote party, so every field goes through :mod:`fades.cli.safe`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from rich.markup import escape
from rich.table import Table

from fades.cli.common import console
from fades.cli.safe import markup, result_text, tail
from fades.outcome import TIMING_KEYS, Outcome

#: the timing rows in the order a task goes through them; ``prepare`` (getting the function
#: ready on first use, when it took a while) comes before the data is read
SHOWN_ORDER = (TIMING_KEYS[0], "prepare", *TIMING_KEYS[1:])


def as_dict(outcome: Outcome | Mapping[str, Any]) -> dict[str, Any]:
    return outcome.model_dump(mode="json") if isinstance(outcome, Outcome) else dict(outcome)


def print_json(value: Any) -> None:
    """``--json``: valid JSON on stdout (json.dumps escapes every control character)."""
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def show_outcome(outcome: Outcome | Mapping[str, Any], title: str = "") -> None:
    """Print a finished (or still running) task: one header line, then the details."""
    d = as_dict(outcome)
    status = str(d.get("status"))
    colour = {"done": "green", "failed": "red"}.get(status, "yellow")
    task_id = d.get("task_id") or d.get("id")
    where = ""
    if d.get("node"):
        where = f" ({markup(d['where'] + ' on ' if d.get('where') else '')}{markup(d['node'])})"
    console.print(
        f"[bold]{markup(title)}[/] task {markup(task_id)}{where}: [{colour}]{markup(status)}[/]",
        soft_wrap=True,
        highlight=False,
    )
    if d.get("error"):
        console.print(
            f"  [red]{markup(d.get('error_kind') or 'error')}[/]: {markup(d['error'])}",
            soft_wrap=True,
            highlight=False,
        )
    if d.get("traceback"):
        console.print("  traceback (last lines):", highlight=False)
        console.print(escape(tail(str(d["traceback"]))), highlight=False, soft_wrap=True)
    if d.get("logs"):
        console.print("  function output:", highlight=False)
        console.print(escape(tail(str(d["logs"]))), highlight=False, soft_wrap=True)
    if d.get("result") is not None:
        console.print(escape(result_text(d["result"])), highlight=False)
    timing = d.get("timing")
    if isinstance(timing, Mapping) and timing:
        table = Table("stage", "ms", title="where the time went")
        known = [k for k in SHOWN_ORDER if k in timing]
        others = sorted(k for k in timing if k not in SHOWN_ORDER)[:20]
        for k in known + others:
            v = timing[k]
            shown = f"{v * 1e3:.2f}" if isinstance(v, (int, float)) else markup(v, 40)
            table.add_row(markup(k, 40, oneline=True), shown)
        console.print(table)
    if d.get("bytes_read") is not None and status in ("done", "failed"):  # not while running
        read, ret = _int(d.get("bytes_read")), _int(d.get("bytes_returned"))
        line = f"  bytes read at the edge: {read:,}; returned: {ret:,}"
        if read > ret > 0:
            line += f" ({read / ret:,.0f}x smaller)"
        if d.get("bytes_uplink") is not None:
            line += f"; sent upstream: {_int(d.get('bytes_uplink')):,}"
        console.print(line, highlight=False)
