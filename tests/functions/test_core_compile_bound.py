"""A core module whose function body is too large to compile cheaply is refused before it is
compiled (found by the hostile review: a 14 MB module of two 7 MB functions took about 2 min
and 3.9 GB of memory to compile, at build, at upload on the controller and on every node)."""

from __future__ import annotations

import time

import pytest
import wasmtime

from fades.errors import BuildError
from fades.functions.build import check_core_abi
from fades.functions.validate import MAX_CORE_FUNCTION_BYTES, largest_function_body

HEAD = (
    '(module (memory (export "memory") 1)'
    ' (func (export "fades_alloc") (param i32) (result i32) (i32.const 1024))'
    ' (func (export "fades_run") (param i32 i32) (result i32) (local i32) '
)
STEP = "(local.set 2 (i32.add (local.get 2) (i32.const 1))) "  # 7 bytes of code


def module(steps: int) -> bytes:
    return bytes(wasmtime.wat2wasm(HEAD + STEP * steps + " (i32.const 0)))"))


def test_a_function_body_over_the_limit_is_refused_before_compiling() -> None:
    big = module(MAX_CORE_FUNCTION_BYTES // 7 + 1000)
    assert largest_function_body(big) > MAX_CORE_FUNCTION_BYTES
    started = time.monotonic()
    with pytest.raises(BuildError, match=f"at most {MAX_CORE_FUNCTION_BYTES} bytes"):
        check_core_abi(big, where="big.wasm")
    assert time.monotonic() - started < 5.0  # refused from its code section, not compiled
    # and a module under the limit is still accepted after it
    small = module(100)
    assert 700 <= largest_function_body(small) < 1000
    check_core_abi(small, where="small.wasm")


def test_largest_function_body_of_malformed_bytes_is_zero_not_an_error() -> None:
    assert largest_function_body(b"\x00asm\x01\x00\x00\x00\x0a\xff") == 0
    assert largest_function_body(b"\x00asm\x01\x00\x00\x00") == 0
