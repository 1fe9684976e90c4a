"""Nimbus placement: which edge node, cloud or nobody serves each device's task.

Modules: :mod:`~fades.placement.model` (data), :mod:`~fades.placement.nimbus` (the
algorithm), :mod:`~fades.placement.variants` (ST / MT / 2PMT),
:mod:`~fades.placement.baselines` (rule baselines and the exact ``milp`` optimum),
:mod:`~fades.placement.generator`, :mod:`~fades.placement.simulator`,
:mod:`~fades.placement.plots`, :mod:`~fades.placement.config`, :mod:`~fades.placement.api`
(one live decision for the controller) and :mod:`~fades.placement.cli` (``fades sim``).
"""

from fades.placement.api import Candidate, Choice, CloudOption, Request, choose
from fades.placement.model import (
    CLOUD,
    LOCAL,
    Allocation,
    Devices,
    Infrastructure,
    QueueModel,
    Tier,
)
from fades.placement.nimbus import NimbusParams, Rule, solve

__all__ = [
    "CLOUD",
    "LOCAL",
    "Allocation",
    "Candidate",
    "Choice",
    "CloudOption",
    "Devices",
    "Infrastructure",
    "NimbusParams",
    "QueueModel",
    "Request",
    "Rule",
    "Tier",
    "choose",
    "solve",
]
