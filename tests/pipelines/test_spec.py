"""Pipeline specs: every malformed spec is refused with the field (and stage) named."""

from __future__ import annotations

import contextlib
import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fades.errors import PipelineValidationError, TaskValidationError
from fades.pipelines.spec import (
    MAX_PIPELINE_BYTES,
    PipelineSpec,
    load_pipeline,
    parse_pipeline,
    parse_pipeline_text,
)

ROAD = """
name: black-ice
credentials: {tenant: roads, priority: 8}
run:
  mode: automatic
  every_s: 10
  for_s: 3600
  run_deadline_s: 5
queue: {max_runs: 100, max_bytes: 8388608, when_full: drop-oldest}
stages:
  - name: detect
    function: {artifact: ice-detect, memory_mib: 32, time_budget_ms: 500}
    data: [{name: road, select: {sensor_type: [surface_temp, dew_point], last_seconds: 60}}]
    scatter: true
  - name: fuse
    after: [detect]
    function: {artifact: ice-fuse}
    gather: {timeout_s: 2}
  - name: warn
    after: [fuse]
    when: "ice == true"
    function: {artifact: ice-broadcast}
    failover: skip
    publish: warnings.road1
  - name: log
    after: [fuse]
    function: {artifact: ice-log}
"""


def road() -> dict[str, Any]:
    import yaml

    obj: dict[str, Any] = yaml.safe_load(ROAD)
    return obj


def stage(obj: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in obj["stages"] if s["name"] == name)
    return found


def refused(obj: Any) -> PipelineValidationError:
    with pytest.raises(PipelineValidationError) as info:
        parse_pipeline(obj)
    err = info.value
    assert isinstance(err, TaskValidationError)
    assert str(err).startswith("invalid pipeline: ")
    assert err.problems
    return err


def test_a_good_spec_parses_with_roles_and_order() -> None:
    spec = parse_pipeline_text(ROAD)
    assert isinstance(spec, PipelineSpec)
    assert spec.name == "black-ice" and spec.tenant == "roads" and spec.priority == 8
    assert spec.roles() == {
        "detect": "start",
        "fuse": "midsection",
        "warn": "finale",
        "log": "finale",
    }
    assert spec.topo_order() == ["detect", "fuse", "warn", "log"]
    assert spec.downstream("fuse") == ["warn", "log"]
    # round trip: what a plan carries parses to the same spec
    assert parse_pipeline(spec.to_dict()) == spec
    assert parse_pipeline_text(json.dumps(spec.to_dict())) == spec


def test_topo_order_puts_every_stage_after_its_upstreams() -> None:
    obj = road()
    obj["stages"].reverse()  # spec order need not be data-flow order
    spec = parse_pipeline(obj)
    order = spec.topo_order()
    for s in spec.stages:
        assert all(order.index(a) < order.index(s.name) for a in s.after)


def test_load_pipeline_reads_a_file(tmp_path: Path) -> None:
    p = tmp_path / "road.yaml"
    p.write_text(ROAD)
    assert load_pipeline(p).name == "black-ice"
    with pytest.raises(PipelineValidationError, match="cannot read pipeline file"):
        load_pipeline(tmp_path / "missing.yaml")


def _mutate(path: str, value: Any) -> dict[str, Any]:
    obj = road()
    target: Any = obj
    *parts, last = path.split(".")
    for p in parts:
        target = stage(obj, p) if target is obj["stages"] else target[p]
        if p == "stages":
            target = obj["stages"]
    if last == "-":
        del target[path.split(".")[-2]]
    else:
        target[last] = value
    return obj


@pytest.mark.parametrize(
    ("path", "value", "field", "match"),
    [
        # the graph
        ("stages.fuse.after", ["fuse"], "stages.fuse.after", "cannot come after itself"),
        ("stages.fuse.after", ["nope"], "stages.fuse.after", "unknown stage 'nope'"),
        ("stages.detect.after", ["warn"], "stages.", "cycle: .* -> .* -> .*"),
        ("stages.fuse.after", ["detect", "detect"], "stages.fuse.after", "repeated: detect"),
        ("stages.log.name", "warn", "stages.warn.name", "2 stages are named 'warn'"),
        ("stages.log.name", "Bad Name", "stages.#4.name", "lowercase letters"),
        # guards
        ("stages.warn.when", "ice ==", "stages.warn.when", "guard syntax error"),
        ("stages.warn.when", "__import__('os')", "stages.warn.when", "not allowed"),
        ("stages.warn.when", "9**9**9", "stages.warn.when", "4096 bits"),
        # scatter and gather
        ("stages.detect.data", [], "stages.detect.scatter", "needs 'data'"),
        ("stages.warn.gather", {"timeout_s": 1}, "stages.warn.gather.timeout_s", "several"),
        ("stages.fuse.gather", {"timeout_s": 0}, "stages.fuse.gather.timeout_s", "greater"),
        # functions and data ops, prefixed with the stage
        (
            "stages.fuse.function",
            {"artifact": "f", "mode": "persistent", "period_s": 1},
            "stages.fuse.function",
            "ephemeral",
        ),
        ("stages.fuse.function", {"artifact": "bad name!"}, "stages.fuse.function.artifact", ""),
        (
            "stages.detect.data",
            [{"name": "road", "select": {"last_seconds": -1}}],
            "stages.detect.data.road.select.last_seconds",
            "greater than 0",
        ),
        (
            "stages.detect.data",
            [{"name": "road"}, {"name": "road"}],
            "stages.detect.data",
            "unique",
        ),
        ("stages.fuse.failover", "retry", "stages.fuse.failover", "substitute"),
        ("stages.fuse.node", "a.b", "stages.fuse.node", "node name"),
        ("stages.fuse.colour", "red", "stages.fuse.colour", "Extra inputs"),
        # publish
        ("stages.warn.publish", "warnings.*", "stages.warn.publish", "wildcards"),
        ("stages.warn.publish", "a..b", "stages.warn.publish", "not a NATS subject"),
        ("stages.warn.publish", "fades.bundle.x", "stages.warn.publish", "reserved"),
        ("stages.warn.publish", "$JS.API.x", "stages.warn.publish", "reserved"),
        # run
        ("run", {"mode": "automatic"}, "run", "exactly one of 'every_s'"),
        (
            "run",
            {"mode": "automatic", "every_s": 1, "on_reading": "sensors.>"},
            "run",
            "exactly one",
        ),
        ("run", {"mode": "on-demand", "every_s": 1}, "run", "only to mode 'automatic'"),
        ("run", {"mode": "automatic", "every_s": 1, "runs": 3}, "run", "'runs'"),
        (
            "run",
            {"mode": "automatic", "every_s": 1, "for_s": 1, "until": "2030-01-01T00:00:00Z"},
            "run",
            "not both",
        ),
        (
            "run",
            {"mode": "automatic", "on_reading": "road.*.temp"},
            "run.on_reading",
            "starting with 'sensors.'",
        ),
        (
            "run",
            {"mode": "automatic", "on_reading": "sensors.>.x"},
            "run.on_reading",
            "last token",
        ),
        ("run", {"mode": "sometimes"}, "run.mode", "on-demand"),
        ("run", {"until": "1600-01-01T00:00:00Z"}, "run.until", "between"),
        ("queue", {"when_full": "block"}, "queue.when_full", "drop-oldest"),
        ("name", "Black Ice", "name", "lowercase"),
        ("stages", [], "stages", "at least 1"),
    ],
)
def test_malformed_specs_name_the_field(path: str, value: Any, field: str, match: str) -> None:
    err = refused(_mutate(path, value))
    fields = [f for f, _ in err.problems]
    assert any(f.startswith(field) for f in fields), err.problems
    assert any(f.startswith(field) and re.search(match, m) for f, m in err.problems), err.problems
    assert field.rstrip(".") in str(err)


def test_cycle_is_named_along_the_graph() -> None:
    obj = road()
    stage(obj, "detect")["after"] = ["fuse"]
    err = refused(obj)
    assert "cycle: detect -> fuse -> detect" in str(err) or "cycle: fuse -> detect -> fuse" in str(
        err
    )
    obj = road()
    stage(obj, "detect")["after"] = ["log"]
    stage(obj, "detect")["scatter"] = False
    err = refused(obj)
    (msg,) = [m for _, m in err.problems]
    cycle = msg.removeprefix("cycle: ").split(" -> ")
    assert cycle[0] == cycle[-1] and set(cycle) == {"detect", "fuse", "log"}


def test_a_guard_on_a_fan_in_reads_stage_names() -> None:
    obj = road()
    obj["stages"].append(
        {"name": "both", "after": ["warn", "log"], "when": "ice", "function": {"artifact": "f"}}
    )
    err = refused(obj)
    assert err.problems[0][0] == "stages.both.when" and "ice" in err.problems[0][1]
    obj["stages"][-1]["when"] = "warn and log.n > 1"
    parse_pipeline(obj)
    # a stage name with '-' is read with '_' (as the function sees it in data[...])
    stage(obj, "log")["name"] = "log-2"
    obj["stages"][-1]["after"] = ["warn", "log-2"]
    obj["stages"][-1]["when"] = "warn and log_2.n > 1"
    parse_pipeline(obj)


def test_every_stage_is_connected_and_a_lone_stage_is_start_and_finale() -> None:
    obj = road()
    obj["stages"] = obj["stages"][:1]
    spec = parse_pipeline(obj)
    assert spec.is_start("detect") and spec.is_finale("detect")
    obj = road()
    obj["stages"].append({"name": "lonely", "function": {"artifact": "f"}})
    err = refused(obj)
    assert err.problems[0][0] == "stages.lonely.after"
    assert "not connected" in err.problems[0][1]


def test_an_unknown_function_is_for_the_controller() -> None:
    """The spec names functions; whether one exists is checked at submit, not here."""
    obj = road()
    stage(obj, "fuse")["function"] = {"artifact": "no-such-function"}
    assert parse_pipeline(obj).stage("fuse").function.artifact == "no-such-function"


def test_many_problems_are_listed_and_counted() -> None:
    obj = road()
    obj["stages"] = [{"name": f"s{i}", "function": {"memory_mib": 0}} for i in range(30)]
    err = refused(obj)
    assert len(err.problems) == 20
    assert "more problems" in str(err)
    assert err.problems[0][0].startswith("stages.s0.")


def test_bounds_of_the_text() -> None:
    with pytest.raises(PipelineValidationError, match="larger than"):
        parse_pipeline_text("a" * (2**20 + 1))
    with pytest.raises(PipelineValidationError, match="nested more than"):
        parse_pipeline_text("[" * 200 + "]" * 200)
    with pytest.raises(PipelineValidationError, match="nested more than"):
        parse_pipeline_text('{"a": ' * 100 + "1" + "}" * 100)
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(9)
    )
    with pytest.raises(PipelineValidationError, match=r"values|aliases"):
        parse_pipeline_text(bomb)
    with pytest.raises(PipelineValidationError, match="not UTF-8"):
        parse_pipeline_text(b"\xff\xfe")
    with pytest.raises(PipelineValidationError, match="expected a mapping"):
        parse_pipeline_text("- 1\n- 2\n")
    with pytest.raises(PipelineValidationError, match="NaN"):
        parse_pipeline({"name": "x", "x": float("nan")})
    obj = road()
    for s in obj["stages"]:
        s["function"]["params"] = {"blob": "x" * 200_000}
    with pytest.raises(PipelineValidationError, match=f"at most {MAX_PIPELINE_BYTES:,}"):
        parse_pipeline(obj)


def test_direct_construction_also_checks_the_graph() -> None:
    obj = road()
    stage(obj, "fuse")["after"] = ["nope"]
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        PipelineSpec.model_validate(obj)


def test_a_good_spec_parses_after_a_bad_one() -> None:
    refused(_mutate("stages.fuse.after", ["nope"]))
    assert parse_pipeline(road()).name == "black-ice"


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_parse_or_are_refused(raw: bytes) -> None:
    with contextlib.suppress(PipelineValidationError):
        parse_pipeline_text(raw)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_values)
def test_random_values_parse_or_are_refused(obj: Any) -> None:
    with contextlib.suppress(PipelineValidationError):
        parse_pipeline(obj)


_keys = st.sampled_from(
    ["after", "when", "scatter", "gather", "node", "publish", "data", "function", "failover"]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 3), _keys, _values), max_size=4), _values)
def test_random_mutations_of_a_good_spec(edits: list[tuple[int, str, Any]], run: Any) -> None:
    obj = copy.deepcopy(road())
    for i, key, value in edits:
        obj["stages"][i][key] = value
    if isinstance(run, dict):
        obj["run"] = run
    try:
        spec = parse_pipeline(obj)
    except PipelineValidationError as exc:
        assert exc.problems
        return
    assert spec.topo_order()
