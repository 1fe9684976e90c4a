"""Pipelines that actuate: a finale's result becomes an actuator command.

A stage may say ``actuate: {device: "<node>/<device>"}``. Its function returns
``{"command": "on", "args": {...}}`` (``args`` optional), or ``null`` for no command. When
the controller records that stage's ``done`` event it sends the command through the same
path as the API (:class:`~fades.devices.commands.DeviceService`): checked against the
device's declaration and the pipeline's tenant, audited with source ``pipeline``. The
command id is derived from the pipeline, run, stage and instance, so an event delivered
twice sends the command once. Only a finale may actuate (its result is not passed on).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, field_validator

if TYPE_CHECKING:
    from fades.pipelines.protocol import StageEvent
    from fades.pipelines.spec import StageSpec

_TARGET = re.compile(r"^[A-Za-z0-9_-]{1,64}/[A-Za-z0-9_-]{1,64}$")


class Actuate(BaseModel):
    """Which actuator a stage's result commands."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: ``<node>/<device>``
    device: str

    @field_validator("device")
    @classmethod
    def _target(cls, v: str) -> str:
        if not _TARGET.match(v):
            raise ValueError(
                "must be '<node>/<device>', each 1-64 letters, digits, '_' or '-', e.g. "
                "'edge1/fan-room1'"
            )
        return v

    @property
    def node(self) -> str:
        return self.device.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.device.split("/", 1)[1]


def actuate_problems(stages: Iterable[StageSpec]) -> list[tuple[str, str]]:
    """A stage that actuates but has stages after it, as ``(field, reason)`` pairs."""
    stages = list(stages)
    feeding = {up for s in stages for up in s.after}
    return [
        (
            f"stages.{s.name}.actuate",
            "only a finale (a stage no other stage comes after) may actuate: its result is "
            "the command",
        )
        for s in stages
        if getattr(s, "actuate", None) is not None and s.name in feeding
    ]


def command_of(result: Any) -> tuple[str, dict[str, Any]] | None:
    """``(command, args)`` from a stage's result, None for no command.

    Raises:
        ValueError: the result is neither null nor ``{"command": str, "args": {...}?}``.
    """
    if result is None or result is False:
        return None
    if not isinstance(result, dict) or not isinstance(result.get("command"), str):
        raise ValueError(
            f"the result must be null or {{'command': ..., 'args': {{...}}}}, "
            f"not {str(result)[:120]}"
        )
    extra = sorted(set(result) - {"command", "args"})
    if extra:
        raise ValueError(f"unexpected key(s) in the command: {', '.join(map(str, extra))}")
    args = result.get("args") or {}
    if not isinstance(args, dict):
        raise ValueError("args must be an object")
    return result["command"], args


def command_id(ev: StageEvent) -> str:
    """The command id of a stage event: the same for every delivery of the event."""
    raw = f"p-{ev.pipeline}-{ev.run}-{ev.stage}-{ev.instance}"
    return re.sub(r"[^A-Za-z0-9_.:-]", "_", raw)[:200]
