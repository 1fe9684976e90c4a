"""The Placer protocol: which node a task runs on, and why.

A placer is given a validated task and the registry's view of the nodes (the entries of the
nodes that are up, and of those that are down, only to explain a refusal) and returns a
:class:`Placement` (a node and a one-line reason) or raises a reasoned
:class:`~fades.errors.NoPlacement`. Placers are pure: they read the view, never the fabric.

``fades.placers`` is the controller's live placement; ``fades.placement`` is the offline
Nimbus simulator (whose scoring :mod:`fades.placers.nimbus` reuses).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from fades.fabric.protocol import NodeInfo
from fades.task import Task

#: where a placed task runs: on an edge node, in the cloud (the controller), on the device
Site = Literal["edge", "cloud", "device"]


@dataclass(slots=True, frozen=True)
class Placement:
    """Where a task runs and why.

    ``where`` is ``edge`` (``node`` names the node), ``cloud`` (``node`` is ``cloud``: a
    task that reads no node's data runs in the controller's cloud runner) or ``device``
    (``node`` names the device: the client should run the task itself). ``decision`` is
    the explanation as JSON (candidates with their predictions and scores, rejected sites
    and why), or None when the placer gives none.
    """

    node: str
    reason: str
    where: Site = "edge"
    decision: dict[str, Any] | None = None


class Placer(Protocol):
    """Chooses a node for a task."""

    #: the name ``fades controller start --placer`` knows it by
    name: str

    def place(self, task: Task, up: Sequence[NodeInfo], down: Sequence[NodeInfo] = ()) -> Placement:
        """The node ``task`` should run on, and why.

        Raises:
            fades.errors.NoPlacement: no node that is up can take it (the message says why).
        """
        ...
