"""Pipeline specs an attacker would write (found by the hostile review).

* ``publish: sensors.edge1.room1.temperature`` on a stage whose function returns a number:
  the stage's note landed in the node's ingest, and the store then held forged readings
  (999.5 for ``room1-temperature``, next to the real sensor's). ``actuators.`` is the same for
  a device's commands, past the tenant check and the audit. Both are refused now.
* ``every_s: 1e-9``: a timer whose float ticks are no longer apart than its period; refused
  below :data:`MIN_EVERY_S`.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fades.errors import PipelineValidationError
from fades.pipelines.runspec import MIN_EVERY_S
from fades.pipelines.spec import parse_pipeline

GOOD: dict[str, Any] = {
    "name": "forger",
    "credentials": {"tenant": "visitor"},
    "stages": [
        {
            "name": "a",
            "function": {"artifact": "forge"},
            "data": [{"name": "t", "select": {"location": "room1"}}],
            "publish": "warnings.room1",
        }
    ],
}


def with_publish(subject: str) -> dict[str, Any]:
    spec = copy.deepcopy(GOOD)
    spec["stages"][0]["publish"] = subject
    return spec


@pytest.mark.parametrize(
    "subject",
    [
        "sensors.edge1.room1.temperature",
        "sensors.edge2.room3.co2",
        "actuators.edge1.fan-room1.set",
        "actuators.edge1.fan-room1.state",
    ],
)
def test_a_stage_cannot_publish_on_sensor_or_actuator_subjects(subject: str) -> None:
    with pytest.raises(PipelineValidationError, match="reserved") as info:
        parse_pipeline(with_publish(subject))
    assert info.value.problems[0][0] == "stages.a.publish"
    # and a good spec parses after the bad one
    assert parse_pipeline(GOOD).stages[0].publish == "warnings.room1"
    # a subject that only shares the word is fine
    assert parse_pipeline(with_publish("sensorsx.room1")).stages[0].publish == "sensorsx.room1"


@pytest.mark.parametrize("every_s", [1e-9, 0.001, MIN_EVERY_S / 2])
def test_a_timer_faster_than_the_minimum_is_refused(every_s: float) -> None:
    spec = copy.deepcopy(GOOD) | {"run": {"mode": "automatic", "every_s": every_s}}
    with pytest.raises(PipelineValidationError, match=r"run\.every_s"):
        parse_pipeline(spec)
    spec["run"]["every_s"] = MIN_EVERY_S
    assert parse_pipeline(spec).run.every_s == MIN_EVERY_S
