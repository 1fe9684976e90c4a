"""Guards: the whitelist refuses hostile expressions, evaluation is bounded and explains."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fades.pipelines.guard import MAX_GUARD_CHARS, MAX_GUARD_DEPTH, Guard, compile_guard


@pytest.mark.parametrize(
    ("expr", "inputs", "expected"),
    [
        ("ice == true", {"detect": {"ice": True, "t": -2.0}}, True),
        ("ice == true", {"detect": {"ice": False}}, False),
        ("ice", {"detect": {"ice": True}}, True),
        ("detect.ice and detect.t < 0", {"detect": {"ice": True, "t": -2.0}}, True),
        ('detect["ice"] is True', {"detect": {"ice": True}}, True),
        ("a.n + b.n > 3", {"a": {"n": 1}, "b": {"n": 3}}, True),
        ("len(fuse.warnings) >= 2", {"fuse": {"warnings": ["x", "y"]}}, True),
        ("max(t) < 0.5 and min(t) > -1", {"s": {"t": [0.1, 0.2]}}, True),
        ("any(v > 3 for_ in x) if false else true", None, None),  # syntax error case below
        ("level in ['high', 'critical']", {"s": {"level": "high"}}, True),
        ("x[0] == 1 and x[-1] == 3", {"s": {"x": [1, 2, 3]}}, True),
        ("note == null", {"s": {"note": None}}, True),
        ("not ice", {"s": {"ice": False}}, True),
        ("round(abs(t), 1) == 2.5", {"s": {"t": -2.5}}, True),
        ("all([ok, ok2]) and any([false, ok])", {"s": {"ok": True, "ok2": 1}}, True),
        ("n ** 2 // 3 % 5 == 0", {"s": {"n": 4}}, True),
        ("1 < n < 3", {"s": {"n": 2}}, True),
        ("'hi' if n else 'lo'", {"s": {"n": 0}}, True),
        ("s", {"s": 0}, False),
    ],
)
def test_evaluates(expr: str, inputs: dict[str, Any] | None, expected: bool | None) -> None:
    if inputs is None:
        with pytest.raises(ValueError, match="syntax"):
            compile_guard(expr)
        return
    assert compile_guard(expr).evaluate(inputs) is expected


def test_names_and_source() -> None:
    g = compile_guard("ice == true and detect.t < limit")
    assert isinstance(g, Guard)
    assert g.source == "ice == true and detect.t < limit"
    assert g.names == frozenset({"ice", "detect", "limit"})
    assert compile_guard("ice == true and detect.t < limit") is g  # compiled once, reused


def test_keys_are_names_only_with_a_single_upstream() -> None:
    g = compile_guard("ice")
    assert g.evaluate({"a": {"ice": True}})
    with pytest.raises(ValueError, match=r"'ice'.*inputs: a, b"):
        g.evaluate({"a": {"ice": True}, "b": {"ice": True}})
    # a stage name wins over a key of the same name
    assert compile_guard("a == 1").evaluate({"a": 1}) is True


@pytest.mark.parametrize(
    ("expr", "match"),
    [
        ("__import__('os')", "calling '__import__' is not allowed"),
        ("().__class__", "attribute '__class__'"),
        ("x.__class__.__bases__", "attribute"),
        ("x._private", "attribute '_private'"),
        ("__builtins__", "name '__builtins__'"),
        ("open('/etc/passwd')", "calling 'open'"),
        ("x.get('a')", "calling 'x.get'"),
        ("len(x=1)", "positional"),
        ("[a for a in b]", "comprehension"),
        ("any(a for a in b)", "comprehension"),
        ("lambda: 1", "lambda"),
        ("(y := 1)", "assignment"),
        ("f'{x}'", "f-string"),
        ("x[1:2]", "slice"),
        ("{1, 2}", "set"),
        ("{'a': 1}", "mapping"),
        ("~x", "'~'"),
        ("1 << 100000", "LShift"),
        ("x | y", "BitOr"),
        ("b'x' == x", "bytes"),
        ("len", "is a function"),
        ("9**9**9", "larger than 4096 bits"),
        ("2 ** 100000 > x", "larger than 4096 bits"),
        ("'a' * 10**9 == x", "longer than 100,000"),
        ("[0] * 10**8", "longer than 100,000"),
        ("round(5, -10**9)", "digits"),
        ("'%999999999d' % 1 == x", "formatting"),
        ("1 / 0 == x", "ZeroDivisionError"),
        ("x ==", "syntax error at the end"),
        ("a b", "syntax error at column 3"),
        ("", "empty"),
    ],
)
def test_refused(expr: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compile_guard(expr)


def test_refusal_names_the_column() -> None:
    with pytest.raises(ValueError, match="at column 13: calling 'open'"):
        compile_guard("ice == 1 or open('x')")


def test_bounded_length_and_depth() -> None:
    with pytest.raises(ValueError, match=f"at most {MAX_GUARD_CHARS} characters"):
        compile_guard("x == " + "1 + " * 200 + "1")
    with pytest.raises(ValueError, match=f"nested more than {MAX_GUARD_DEPTH}"):
        compile_guard("-" * 100 + "x")
    with pytest.raises(ValueError, match="nested"):
        compile_guard("[" * 150 + "]" * 150)
    with pytest.raises(TypeError):
        compile_guard(3)  # type: ignore[arg-type]


def test_evaluation_is_bounded_on_hostile_inputs() -> None:
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="larger than 4096 bits"):
        compile_guard("n ** n ** n > 0").evaluate({"s": {"n": 9}})
    with pytest.raises(ValueError, match="longer than 100,000"):
        compile_guard("s * n").evaluate({"s": "ab", "n": 10**9})
    with pytest.raises(ValueError, match="longer than 100,000"):
        compile_guard("(s + s) * 1").evaluate({"a": {"s": "x" * 60_000}})
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize(
    ("expr", "inputs", "match"),
    [
        ("ice == true", {"detect": {"temp": 1}}, "no input or field named 'ice'"),
        ("detect.ice", {"detect": {"temp": 1}}, "no field 'ice'"),
        ("detect.ice", {"detect": [1]}, "cannot read 'ice' of a list"),
        ("x[5]", {"s": {"x": [1]}}, "index 5 out of range"),
        ("x < 1", {"s": {"x": "a"}}, "TypeError"),
        ("x % 1", {"s": {"x": "%999999999d"}}, "formatting"),
        ("1 / x > 0", {"s": {"x": 0}}, "ZeroDivisionError"),
        ("x ** 400.0 > 1", {"s": {"x": 10.0}}, "OverflowError"),
    ],
)
def test_evaluation_errors_name_the_problem(expr: str, inputs: dict[str, Any], match: str) -> None:
    g = compile_guard(expr)
    with pytest.raises(ValueError, match=match) as info:
        g.evaluate(inputs)
    assert expr in str(info.value)
    # the guard is still usable afterwards on good inputs
    compile_guard("true").evaluate({})


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_any_text_compiles_or_is_refused(text: str) -> None:
    try:
        g = compile_guard(text)
    except ValueError:
        return
    with contextlib.suppress(ValueError):
        g.evaluate({"a": {"x": 1, "ice": True}})


_atoms = st.sampled_from(["x", "ice", "a.x", "1", "2.5", "'s'", "true", "null", "[1, 2]"])
_ops = st.sampled_from([" + ", " * ", " ** ", " / ", " == ", " < ", " and ", " or ", " in "])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_atoms, _ops), min_size=1, max_size=12), _atoms)
def test_generated_expressions_evaluate_or_explain(parts: list[tuple[str, str]], last: str) -> None:
    expr = "".join(a + o for a, o in parts) + last
    try:
        g = compile_guard(expr)
    except ValueError:
        return
    with contextlib.suppress(ValueError):
        assert g.evaluate({"a": {"x": 3, "ice": False}}) in (True, False)
