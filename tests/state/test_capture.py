"""The guest's transparent capture, run natively (the same module runs inside the sandbox):
what is captured and restored exactly, what is skipped as code, what is refused by name."""

from __future__ import annotations

import base64
import collections
import datetime
import decimal
import fractions
import math
import re
from typing import Any

import pytest

from fades.guest.fades_capture import (
    StateNotCapturable,
    StateRestoreError,
    _capture,
    capture,
    restore,
)

SOURCE = """
import math
from collections import deque
from math import sqrt

count = 0
def main(data, params):
    return count
class Helper:
    pass
"""


def module(extra: str = "") -> dict[str, Any]:
    ns: dict[str, Any] = {"__name__": "fades_function"}
    exec(compile(SOURCE + extra, "f.py", "exec"), ns)
    return ns


@pytest.fixture(params=["fast", "tagged"])
def encoding(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def round_trip(ns: dict[str, Any], encoding: str = "fast") -> dict[str, Any]:
    if encoding == "fast":
        text = capture(ns, 1 << 20)
        assert text[:1] == "P"  # plain data takes the fast path
    else:
        text = _capture(ns, 1 << 20, track=False)
    fresh = module()
    restore(fresh, text)
    return fresh


def test_plain_data_round_trips(encoding: str) -> None:
    ns = module()
    shared = [1, 2]
    ns.update(
        count=2**100,
        neg=-(2**60),
        f=1.5,
        nan=float("nan"),
        inf=float("-inf"),
        c=complex(1, -2),
        s="héllo",
        b=b"\x00\xff",
        ba=bytearray(b"ab"),
        t=(1, (2, "x")),
        st={1, "a", (2, 3)},
        fs=frozenset({1, 2}),
        d={1: "int key", "k": [None, True], (1, 2): {}, None: 0.5},
        q=collections.deque([1, 2], maxlen=3),
        od=collections.OrderedDict(b=1, a=2),
        ct=collections.Counter("hello"),
        dd=collections.defaultdict(list, {"x": [1]}),
        dec=decimal.Decimal("1.10"),
        fr=fractions.Fraction(1, 3),
        when=datetime.datetime(2026, 11, 29, 9, 30, tzinfo=datetime.UTC),
        day=datetime.date(2026, 1, 2),
        dt=datetime.timedelta(days=1, seconds=5),
        a=shared,
        b2=shared,
    )
    got = round_trip(ns, encoding)
    for k in ("count", "neg", "f", "c", "s", "b", "ba", "t", "st", "fs", "d", "q", "od", "ct"):
        assert got[k] == ns[k] and type(got[k]) is type(ns[k]), k
    assert math.isnan(got["nan"]) and got["inf"] == float("-inf")
    assert got["q"].maxlen == 3 and got["dd"]["y"] == [] and str(got["dec"]) == "1.10"
    assert got["fr"] == fractions.Fraction(1, 3) and got["when"] == ns["when"]
    assert got["a"] is got["b2"]  # a shared reference stays shared
    assert callable(got["main"]) and got["Helper"].__name__ == "Helper"


def test_cycles_survive(encoding: str) -> None:
    ns = module()
    loop: list[Any] = [1]
    loop.append(loop)
    me: dict[str, Any] = {}
    me["self"] = me
    ns.update(loop=loop, me=me)
    got = round_trip(ns, encoding)
    assert got["loop"][1] is got["loop"] and got["me"]["self"] is got["me"]


def test_code_is_skipped_not_captured() -> None:
    for text in (capture(module(), 1 << 20), _capture(module(), 1 << 20, track=False)):
        assert restore({}, text) == ["count"]  # main, Helper, math, deque, sqrt are code
        assert len(text) < 100  # a counter's state is tiny


@pytest.mark.parametrize(
    ("extra", "name", "what"),
    [
        ("pick = lambda x: x\n", "'pick'", "a lambda"),
        ("gen = (i for i in range(3))\n", "'gen'", "a generator"),
        ("h = Helper()\n", "'h'", "a Helper object"),
        ("cache = {'k': [1, (i for i in [])]}\n", "'cache'['k'][1]", "a generator"),
        ("import io\nf = io.BytesIO()\n", "'f'", "a BytesIO object"),
    ],
)
def test_uncapturable_global_named(extra: str, name: str, what: str) -> None:
    with pytest.raises(StateNotCapturable, match=re.escape(f"global {name} holds {what}")):
        capture(module(extra), 1 << 20)


def test_limit_and_malformed() -> None:
    ns = module("big = 'x' * 5000\n")
    with pytest.raises(StateNotCapturable, match="over the limit of 4096 bytes"):
        capture(ns, 4096)
    with pytest.raises(StateRestoreError):
        restore({}, "not json")
    with pytest.raises(StateRestoreError, match=r"names os\.system"):
        restore({}, "P" + base64.b64encode(b"cos\nsystem\n(S'true'\ntR.").decode())
    with pytest.raises(StateRestoreError, match="unknown tag"):
        restore({}, '{"v": 1, "g": {"x": ["zz", 1]}}')
