"""The epoch ticker sleeps while no deadline is pending, and every armed deadline is still
reached (``fades.sandbox.engine``); core exports are called through ``I32Call``, which must
answer as wasmtime-py's own ``Func.__call__`` does (``fades.sandbox.core``)."""

from __future__ import annotations

import time

import pytest
import wasmtime
from tests.test_sandbox_core import INFINITE_LOOP, ROWS, TRAP, core

from fades.broker.base import Dataset
from fades.errors import FunctionCrashed, TimeLimitExceeded
from fades.functions.keys import SigningKey
from fades.sandbox import engine
from fades.sandbox.base import Limits
from fades.sandbox.core import CoreSandbox, I32Call
from fades.sandbox.wire import encode


@pytest.fixture(scope="module")
def blob() -> bytearray:
    ds = Dataset.from_records([1.0, 2.0, 3.0, 4.0], [20.0] * 4, ["t"] * 4, ["room1"] * 4, ["d"] * 4)
    return encode({"t": ds})


def _wait_asleep(timeout: float = 60.0) -> None:
    """Until the ticker has gone to sleep (it clears the flag just before it does)."""
    deadline = time.monotonic() + timeout
    while engine._armed.is_set() or engine.ticks() < engine._until:
        assert time.monotonic() < deadline, "the ticker never went to sleep"
        time.sleep(0.01)


def test_the_ticker_sleeps_after_the_last_deadline_and_wakes_for_the_next(
    monkeypatch: pytest.MonkeyPatch,
    blob: bytearray,
    signing_key: SigningKey,
) -> None:
    monkeypatch.setattr(engine, "IDLE_TICKS", 2)
    engine.engine()
    res = CoreSandbox().run(core("rows", ROWS, signing_key), blob, Limits(4, 50))
    assert res.value == {"rows": 4.0}
    _wait_asleep()  # without the idle sleep the flag stays set forever
    slept_at = engine.ticks()
    assert slept_at >= engine._until  # it passed every armed deadline first
    # an infinite loop armed after the sleep is still interrupted within its budget
    t0 = time.monotonic()
    with pytest.raises(TimeLimitExceeded, match=r"^time limit 100 ms exceeded"):
        CoreSandbox().run(core("loop", INFINITE_LOOP, signing_key), blob, Limits(4, 100))
    assert time.monotonic() - t0 < 30.0
    assert engine.ticks() > slept_at


def test_a_long_budget_keeps_the_ticker_running_to_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
    blob: bytearray,
    signing_key: SigningKey,
) -> None:
    """The ticker must not sleep while a running guest's deadline lies ahead, however long
    the budget: the infinite loop is interrupted, not left running."""
    monkeypatch.setattr(engine, "IDLE_TICKS", 0)
    engine.engine()
    with pytest.raises(TimeLimitExceeded, match=r"^time limit 1500 ms exceeded"):
        CoreSandbox().run(core("loop", INFINITE_LOOP, signing_key), blob, Limits(4, 1500))


def _i32_module() -> tuple[wasmtime.Store, wasmtime.Func]:
    store = wasmtime.Store(engine.engine())
    store.set_epoch_deadline(engine.ticks_for(1000))
    wat = """(module (func (export "f") (param i32 i32) (result i32)
               (i32.sub (local.get 0) (local.get 1))))"""
    inst = wasmtime.Instance(store, wasmtime.Module(store.engine, wat), [])
    f = inst.exports(store)["f"]
    assert isinstance(f, wasmtime.Func)
    return store, f


@pytest.mark.parametrize(
    "args", [(7, 3), (0, 1), (-5, 2**31 - 1), (2**31 - 1, -1), (2**32 + 5, 1), (-(2**31), 1)]
)
def test_i32call_answers_as_wasmtime_py_does(args: tuple[int, int]) -> None:
    store, f = _i32_module()
    assert I32Call(f, 2)(store, *args) == f(store, *args)


def test_i32call_refuses_what_wasmtime_py_refuses() -> None:
    store, f = _i32_module()
    call = I32Call(f, 2)
    with pytest.raises(TypeError):
        call(store, 1)
    with pytest.raises(TypeError):
        call(store, 1.5, 2)  # type: ignore[arg-type]
    assert call(store, 9, 4) == 5  # still usable


def test_a_trap_through_the_fast_call_is_a_clear_error_and_the_next_run_works(
    blob: bytearray,
    signing_key: SigningKey,
) -> None:
    with pytest.raises(FunctionCrashed, match="trapped during compute"):
        CoreSandbox().run(core("trap", TRAP, signing_key), blob, Limits(4, 300))
    assert CoreSandbox().run(core("rows", ROWS, signing_key), blob, Limits(4, 300)).value == {
        "rows": 4.0
    }
