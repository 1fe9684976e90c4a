"""Task text an attacker (or a careless tool) would write (found by the hostile review).

* A key given twice: YAML and JSON kept the last one silently, so a file showing
  ``credentials: {tenant: t}`` first ran as the tenant of a second ``credentials:``.
* A boolean where a number goes, or a number where a boolean goes: ``memory_mib: true`` ran
  with 1 MiB, ``allow_empty: 1`` meant true.
Each is a one-line TaskValidationError naming the field, and a good task parses after it.
"""

from __future__ import annotations

import json

import pytest

from fades.errors import TaskValidationError
from fades.task import parse_task, parse_task_text

GOOD = (
    "credentials: {tenant: t}\n"
    "data:\n  - {name: x, select: {location: room1, last_seconds: 60}, allow_empty: true}\n"
    "function: {artifact: f, memory_mib: 32}\n"
)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (GOOD + "credentials: {tenant: u}\n", "key 'credentials' is given twice (line 5)"),
        (GOOD.replace("{tenant: t}", "{tenant: t, tenant: u}"), "key 'tenant' is given twice"),
        (
            '{"credentials": {"tenant": "t"}, "credentials": {"tenant": "u"},'
            ' "data": [{"name": "x", "select": {"location": "room1"}}],'
            ' "function": {"artifact": "f"}}',
            "key 'credentials' is given twice",
        ),
    ],
)
def test_a_key_given_twice_is_refused(text: str, words: str) -> None:
    with pytest.raises(TaskValidationError, match="invalid task: ") as info:
        parse_task_text(text)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert parse_task_text(GOOD).tenant == "t"


def test_a_yaml_merge_key_may_still_be_overridden() -> None:
    text = GOOD.replace("memory_mib: 32}", "memory_mib: 32, params: {<<: {a: 1}, a: 2}}")
    assert parse_task_text(text).function.params == {"a": 2}


@pytest.mark.parametrize(
    ("old", "new", "field", "words"),
    [
        ("memory_mib: 32", "memory_mib: true", "function.memory_mib", "not true"),
        ("memory_mib: 32", "time_budget_ms: false", "function.time_budget_ms", "not false"),
        ("{tenant: t}", "{tenant: t, priority: true}", "credentials.priority", "not true"),
        ("last_seconds: 60", "last_seconds: true", "data.0.select.last_seconds", "not true"),
        ("allow_empty: true", "allow_empty: 1", "data.0.allow_empty", "true or false, not 1"),
    ],
)
def test_a_boolean_is_not_a_number_and_a_number_is_not_a_boolean(
    old: str, new: str, field: str, words: str
) -> None:
    with pytest.raises(TaskValidationError) as info:
        parse_task_text(GOOD.replace(old, new))
    assert info.value.problems[0][0] == field and words in str(info.value), str(info.value)
    task = parse_task_text(GOOD)
    assert task.function.memory_mib == 32 and task.data[0].allow_empty is True
    assert task.data[0].select.last_seconds == 60
    # the same through a mapping (what the controller hands the schema)
    obj = json.loads(json.dumps(parse_task_text(GOOD).model_dump(mode="json")))
    obj["function"]["memory_mib"] = True
    with pytest.raises(TaskValidationError, match=r"function\.memory_mib"):
        parse_task(obj)
