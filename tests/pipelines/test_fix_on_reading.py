"""``run.on_reading`` patterns that can never match a reading are refused, and a submit
warns when no registered node's sensors match the pattern (``fades pipeline`` as a
subprocess against a real controller and nats-server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.conftest import Bed, held  # type: ignore[import-not-found]
from fades.errors import PipelineValidationError
from fades.fabric.protocol import NodeInfo
from fades.functions.keys import SigningKey
from fades.pipelines.readings import unmatched
from fades.pipelines.spec import parse_pipeline

from .test_cli_pipeline import cli_bed, fades  # noqa: F401  (the fixture)
from .test_service import cluster


def auto(pattern: str) -> dict[str, Any]:
    return {
        "name": "onr",
        "credentials": {"tenant": "facilities", "priority": 6},
        "run": {"mode": "automatic", "on_reading": pattern},
        "stages": [{"name": "a", "function": {"artifact": "f"}}],
    }


@pytest.mark.parametrize(
    "pattern",
    ["sensors.n1.room1", "sensors.*", "sensors.n1.room1.temperature.x", "sensors.*.*.*.>"],
)
def test_a_pattern_that_can_never_match_a_reading_is_refused_in_one_line(pattern: str) -> None:
    with pytest.raises(PipelineValidationError) as err:
        parse_pipeline(auto(pattern))
    msg = str(err.value)
    assert msg.startswith("invalid pipeline: run.on_reading: can never match a reading")
    assert "\n" not in msg and "sensors.<node>.<location>.<sensor_type>" in msg


@pytest.mark.parametrize(
    "pattern", ["sensors.>", "sensors.n1.>", "sensors.*.room1.>", "sensors.*.room1.temperature"]
)
def test_patterns_that_can_match_are_accepted(pattern: str) -> None:
    assert parse_pipeline(auto(pattern)).run.on_reading == pattern


def test_unmatched_names_a_missing_node_or_says_no_sensor_matches() -> None:
    nodes = [NodeInfo(name="n1", data=[held("room1")]), NodeInfo(name="n2")]
    assert unmatched("sensors.*.room1.temperature", nodes) is None
    assert unmatched("sensors.>", nodes) is None
    missing = unmatched("sensors.n9.room1.temperature", nodes)
    assert missing and "'n9'" in missing and "not registered" in missing
    none = unmatched("sensors.n2.room1.temperature", nodes)
    assert none and "matches no sensor of the 2 registered node(s)" in none


def test_submit_and_plan_warn_when_no_registered_sensor_matches(
    cli_bed: Bed,  # noqa: F811
    signing_key: SigningKey,
    tmp_path: Path,
) -> None:
    bed = cli_bed
    cluster(bed, signing_key)  # n1 holds room1/temperature, n2 room2/temperature
    f = tmp_path / "onr.yaml"

    f.write_text(yaml.safe_dump(auto("sensors.n1.room1")))  # malformed: refused, exit 2
    proc = fades(bed, "submit", str(f))
    assert proc.returncode == 2, proc.stdout
    assert "run.on_reading: can never match a reading" in proc.stderr

    f.write_text(yaml.safe_dump(auto("sensors.n9.room1.temperature")))
    proc = fades(bed, "plan", str(f))
    assert proc.returncode == 0, proc.stderr
    assert "warning" in proc.stdout and "'n9', which is not registered" in proc.stdout

    f.write_text(yaml.safe_dump(auto("sensors.*.room1.humidity")))
    proc = fades(bed, "submit", str(f))
    assert proc.returncode == 0, proc.stderr
    assert "deployed" in proc.stdout and "matches no sensor" in proc.stdout

    # a pattern a node's sensors match: deployed (a replace), no warning
    f.write_text(yaml.safe_dump(auto("sensors.*.room1.temperature")))
    proc = fades(bed, "submit", "--replace", "--json", str(f))
    assert proc.returncode == 0, proc.stderr
    receipt = yaml.safe_load(proc.stdout)
    assert receipt["version"] == 2 and receipt["warnings"] == []
