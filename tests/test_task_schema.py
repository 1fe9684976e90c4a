"""The task schema: valid tasks parse; each kind of malformed task names its field and why."""

from __future__ import annotations

import copy
import json
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from fades.errors import FadesError, TaskValidationError
from fades.task import Task, load_task, parse_task, parse_task_text

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "tasks"

BASE: dict[str, Any] = {
    "credentials": {"tenant": "facilities"},
    "data": [{"name": "t", "select": {"location": "room1", "sensor_type": "temperature"}}],
    "function": {"artifact": "minmaxmean"},
}


def variant(path: str, value: Any = None, *, delete: bool = False) -> dict[str, Any]:
    """BASE with the dotted ``path`` set to ``value`` (or deleted)."""
    obj = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node: Any = obj
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if delete:
        del node[last]
    else:
        node[last] = value
    return obj


def refused(obj: Any) -> TaskValidationError:
    with pytest.raises(TaskValidationError) as err:
        parse_task(obj)
    assert isinstance(err.value, FadesError)
    assert str(err.value).startswith("invalid task")
    return err.value


def fields(err: TaskValidationError) -> list[str]:
    return [f for f, _ in err.problems]


def test_a_minimal_task_parses_with_defaults() -> None:
    task = parse_task(BASE)
    assert isinstance(task, Task)
    assert task.tenant == "facilities"
    assert task.credentials.priority == 5
    assert task.function.mode == "ephemeral"
    assert task.function.memory_mib == 64
    assert len(task.id) == 16  # generated


def test_every_example_task_parses() -> None:
    paths = sorted(EXAMPLES.glob("*.yaml"))
    assert len(paths) >= 4
    for p in paths:
        assert load_task(p).data


def test_a_task_round_trips_through_its_json() -> None:
    task = parse_task(variant("credentials.deadline", "2030-01-01T00:00:00"))
    again = parse_task_text(task.to_json())
    assert again == task
    assert again.credentials.deadline is not None
    assert again.credentials.deadline.tzinfo == UTC  # naive deadlines are read as UTC


@pytest.mark.parametrize(
    ("obj", "field", "reason"),
    [
        (variant("credentials.tenant", delete=True), "credentials.tenant", "required"),
        (variant("credentials.tenant", "no spaces allowed"), "credentials.tenant", "letters"),
        (variant("credentials.priority", 12), "credentials.priority", "less than or equal to 9"),
        (variant("credentials.priority", -1), "credentials.priority", "greater than or equal"),
        (variant("data", []), "data", "at least 1 item"),
        (variant("function.mode", "persistent"), "function", "period_s"),
        (variant("function.period_s", 1.0), "function", "persistent"),
        (variant("function.artifact", "sha256:xyz"), "function.artifact", "64 hex digits"),
        (variant("function.artifact", "not a name!"), "function.artifact", "function name"),
        (variant("function.bogus", 1), "function.bogus", "Extra inputs"),
        (variant("credentials.colour", "red"), "credentials.colour", "Extra inputs"),
        (variant("function.memory_mib", 0), "function.memory_mib", "greater than or equal"),
        (variant("function.params", {"x": {1, 2}}), "function.params", "JSON"),
        (variant("data.0.name", "has-dash"), "data.0.name", "identifier"),
        (variant("data.0.select.last", 0), "data.0.select.last", "greater than 0"),
        (
            variant("data.0.select", {"since": "2024-01-02T00:00:00", "until": "2024-01-01"}),
            "data.0.select",
            "'since' must be earlier than 'until'",
        ),
        (
            variant("data.0.select", {"since": "2024-01-01T00:00:00", "until": "2024-01-01"}),
            "data.0.select",
            "'since' must be earlier than 'until'",
        ),
    ],
    ids=[
        "missing-tenant",
        "bad-tenant",
        "priority-too-high",
        "priority-negative",
        "empty-data",
        "persistent-without-period",
        "period-on-ephemeral",
        "bad-digest-ref",
        "bad-artifact-name",
        "unknown-function-field",
        "unknown-credentials-field",
        "zero-memory",
        "params-not-json",
        "bad-op-name",
        "last-zero",
        "since-after-until",
        "since-equals-until",
    ],
)
def test_a_malformed_task_is_refused_naming_the_field(obj: Any, field: str, reason: str) -> None:
    err = refused(obj)
    assert field in fields(err), err.problems
    assert any(f == field and reason in r for f, r in err.problems), err.problems
    assert field in str(err) and reason in str(err)


def test_duplicate_op_names_are_refused_naming_the_repeated_name() -> None:
    obj = variant("data", [{"name": "t"}, {"name": "u"}, {"name": "t"}])
    err = refused(obj)
    assert "data operation names must be unique; repeated: t" in str(err)


def test_duplicate_op_names_are_reported_against_the_data_field() -> None:
    err = refused(variant("data", [{"name": "t"}, {"name": "t"}]))
    assert fields(err) == ["data"]


def test_every_problem_is_reported_at_once() -> None:
    obj = variant("credentials.priority", 99)
    obj["function"]["artifact"] = "sha256:00"
    del obj["credentials"]["tenant"]
    err = refused(obj)
    assert {"credentials.tenant", "credentials.priority", "function.artifact"} <= set(fields(err))


@pytest.mark.parametrize("obj", [[1, 2], "a string", 42, None])
def test_a_task_that_is_not_a_mapping_is_refused(obj: Any) -> None:
    err = refused(obj)
    assert fields(err) == ["task"]
    assert "expected a mapping" in str(err)


def test_invalid_yaml_is_refused_as_a_task_error() -> None:
    with pytest.raises(TaskValidationError) as err:
        parse_task_text("credentials: [unclosed", source="bad.yaml")
    assert fields(err.value) == ["task"]
    assert "bad.yaml is not valid YAML/JSON" in str(err.value)


def test_json_text_is_accepted_as_a_task() -> None:
    assert parse_task_text(json.dumps(BASE)).tenant == "facilities"


def test_a_missing_task_file_is_a_task_error(tmp_path: Path) -> None:
    with pytest.raises(TaskValidationError) as err:
        load_task(tmp_path / "nope.yaml")
    assert "cannot read task file" in str(err.value)


def test_the_task_id_of_a_malformed_task_is_kept_for_the_reply() -> None:
    obj = variant("credentials.task_id", "abc-1")
    obj["credentials"]["priority"] = 10
    err = refused(obj)
    assert err.context.get("task_id") == "abc-1"
