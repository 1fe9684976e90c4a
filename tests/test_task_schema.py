"""The task schema: valid tasks parse; each kind of malformed task names its field and why."""

from __future__ import annotations

import contextlib
import copy
import json
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
        (variant("data", []), "data", "at least one data operation"),
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


# --- hostile input: bounded before it is parsed, a clear error, never a traceback ------------
def text_refused(text: str | bytes) -> TaskValidationError:
    with pytest.raises(TaskValidationError) as err:
        parse_task_text(text)
    assert str(err.value).startswith("invalid task")
    assert "\n" not in str(err.value) and len(str(err.value)) < 2000
    return err.value


def laughs(levels: int, width: int = 10) -> str:
    """A 'billion laughs' YAML: each anchor repeats the previous one ``width`` times."""
    out = ["l0: &l0 [" + ",".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        out.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(out) + "\ncredentials: {tenant: a}\n"


def test_a_billion_laughs_is_refused_quickly() -> None:
    t0 = time.perf_counter()
    err = text_refused(laughs(9))  # 10**9 'lol's if expanded
    assert "more than 64 YAML aliases" in str(err)
    assert time.perf_counter() - t0 < 5


def test_aliases_within_the_bound_may_not_expand_beyond_the_value_bound() -> None:
    # 2 aliases per level, 25 levels = 50 aliases, 2**26 values if expanded
    lines = ["a0: &a0 [x, x]"] + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 26)]
    text = "\n".join(lines) + "\ncredentials: {tenant: a}\n"
    err = text_refused(text)
    assert "more than 100,000 values" in str(err)


def test_a_few_aliases_are_still_fine() -> None:
    text = (
        "credentials: {tenant: facilities}\n"
        "data:\n"
        "  - {name: a, select: &s {location: room1, sensor_type: temperature}}\n"
        "  - {name: b, select: *s}\n"
        "function: {artifact: minmaxmean}\n"
    )
    task = parse_task_text(text)
    assert task.data[0].select == task.data[1].select


def test_a_self_referencing_alias_is_refused() -> None:
    assert "nested more than 32 levels" in str(text_refused("a: &a [*a]\n"))


@pytest.mark.parametrize("kind", ["json", "yaml-flow", "yaml-block"])
def test_deep_nesting_is_refused_before_python_recursion(kind: str) -> None:
    n = 5000
    text = {
        "json": '{"credentials": ' + "[" * n + "]" * n + "}",
        "yaml-flow": "credentials: " + "[" * n + "]" * n,
        "yaml-block": "credentials:\n" + "".join(" " * i + "- \n" for i in range(1, 400)),
    }[kind]
    assert "nested more than 32 levels deep" in str(text_refused(text))


def test_deep_params_are_refused_naming_the_rule() -> None:
    deep: Any = 1
    for _ in range(40):
        deep = {"a": deep}
    err = refused(variant("function.params", {"x": deep}))
    assert "nested more than 32 levels deep" in str(err)


def test_a_task_file_over_one_mib_is_refused_before_it_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("# padding\n" * 200_000)
    with pytest.raises(TaskValidationError, match="larger than 1,048,576 bytes"):
        load_task(path)
    text_refused("#" * (2**20 + 1))


@pytest.mark.parametrize(
    "data",
    [b"\x00\x01\xff\xfe" * 64, b"\x7fELF\x02\x01\x01" + bytes(range(256)), "ä".encode("latin-1")],
)
def test_binary_and_non_utf8_files_are_refused(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "task.bin"
    path.write_bytes(data)
    with pytest.raises(TaskValidationError) as err:
        load_task(path)
    assert "not UTF-8" in str(err.value) or "not valid YAML/JSON" in str(err.value)


def test_nul_and_control_characters_are_refused() -> None:
    assert "special characters" in str(text_refused("credentials: {tenant: \x00}\n"))


@pytest.mark.parametrize(
    ("path", "value", "rule"),
    [
        ("data.0.select.last_seconds", 1e12, "less than or equal to 3153600000"),
        ("data.0.select.last_seconds", -5, "greater than 0"),
        ("data.0.select.last_seconds", float("nan"), "NaN and infinity are not allowed"),
        ("data.0.select.last_seconds", float("inf"), "NaN and infinity are not allowed"),
        ("data.0.select.last_seconds", 10**400, "valid number"),
        ("data.0.select.last", 10**400, "less than or equal to 1000000000"),
        ("data.0.select.since", 1e20, "valid datetime"),
        ("data.0.select.since", "0001-01-01T00:00:00", "between 1900-01-01 and 9000-01-01"),
        ("data.0.select.until", "9999-12-31T23:59:59+00:00", "between 1900-01-01"),
        ("data.0.select.location", "x" * 100_000, "at most 256 characters"),
        ("data.0.select.location", [f"r{i}" for i in range(2000)], "at most 1000 names"),
        ("data.0.connector", "c" * 5000, "1-64 characters"),
        ("credentials.priority", 10**400, "less than or equal to 9"),
        ("credentials.deadline", "99999-01-01", "valid datetime"),
        ("function.period_s", float("inf"), "NaN and infinity are not allowed"),
        ("function.memory_mib", -(10**30), "greater than or equal to 1"),
        ("function.params", {"x": float("nan")}, "NaN and infinity are not allowed"),
        ("function.params", {"x": "y" * 300_000}, "at most 262,144"),
    ],
)
def test_absurd_values_name_the_field_and_the_rule(path: str, value: Any, rule: str) -> None:
    err = refused(variant(path, value))
    assert path.split(".")[-1] in str(err) and rule in str(err), str(err)


def test_absurd_numbers_in_yaml_text_are_clear_errors() -> None:
    for text in (
        "credentials: {tenant: a, deadline: 2020-02-30}\n",  # PyYAML raises ValueError itself
        "credentials: {tenant: a}\nx: 1" + "0" * 5000 + "\n",  # beyond int() digit limit
    ):
        assert "not valid YAML/JSON" in str(text_refused(text))
    text = json.dumps(variant("data.0.select.last_seconds", 1)).replace(": 1}", ": NaN}")
    assert "NaN is not allowed" in str(text_refused(text))


def test_a_task_with_thousands_of_problems_lists_a_bounded_few() -> None:
    err = refused({f"k{i}": i for i in range(5000)} | BASE)
    assert len(err.problems) == 20
    assert "and 4980 more problems" in str(err)


# --- properties: any input parses or is a TaskValidationError ----------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=40,
)


def _parses_or_refuses(text: str | bytes) -> None:
    with contextlib.suppress(TaskValidationError):
        parse_task_text(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_parse_or_are_a_task_validation_error(data: bytes) -> None:
    _parses_or_refuses(data)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=500))
def test_any_text_parses_or_is_a_task_validation_error(text: str) -> None:
    _parses_or_refuses(text)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_value_parses_or_is_a_task_validation_error(value: Any) -> None:
    _parses_or_refuses(json.dumps(value))  # NaN/Infinity tokens included
    with contextlib.suppress(TaskValidationError):
        parse_task(value)


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries(
        {"credentials": json_values, "data": json_values, "function": json_values}
    )
)
def test_any_values_in_a_task_shaped_mapping_parse_or_are_refused(value: dict[str, Any]) -> None:
    _parses_or_refuses(json.dumps(value))


def test_a_task_mapping_larger_than_one_mib_as_json_is_refused() -> None:
    names = [f"{i:0>250}" for i in range(1000)]  # 1000 names of 250 characters: allowed
    ops = [{"name": f"d{i}", "select": {"location": names, "device": names}} for i in range(3)]
    err = refused(BASE | {"data": ops})
    assert "larger than 1,048,576 bytes as JSON" in str(err)
