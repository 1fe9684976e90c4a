"""Live task placement for the controller: the :class:`Placer` protocol and its placers.

* ``locality`` (default): :class:`LocalityPlacer`, the least loaded node holding the data;
* ``nimbus``: :class:`NimbusPlacer`, Nimbus scoring over the nodes (the holders, for a task
  that reads data), the cloud and the task's device, with measured figures
  (:mod:`fades.placers.estimates`).

Not to be confused with :mod:`fades.placement`, the offline Nimbus simulator.
"""

from __future__ import annotations

from fades.placers.base import Placement, Placer, Site
from fades.placers.estimates import Estimates, LabelEstimates, NodeEstimate
from fades.placers.locality import LocalityPlacer, describe_op
from fades.placers.nimbus import NimbusPlacer

#: placer name -> class (the choices of ``fades controller start --placer``)
PLACERS: dict[str, type[LocalityPlacer] | type[NimbusPlacer]] = {
    "locality": LocalityPlacer,
    "nimbus": NimbusPlacer,
}


def placer(name: str) -> Placer:
    """A placer by name.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    cls = PLACERS.get(name)
    if cls is None:
        raise ValueError(f"unknown placer {name!r}; expected one of {', '.join(PLACERS)}")
    return cls()


__all__ = [
    "PLACERS",
    "Estimates",
    "LabelEstimates",
    "LocalityPlacer",
    "NimbusPlacer",
    "NodeEstimate",
    "Placement",
    "Placer",
    "Site",
    "describe_op",
    "placer",
]
