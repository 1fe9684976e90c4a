"""Fixtures shared by the placement tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fades.placement.variants import SolverPool


@pytest.fixture(scope="session")
def pool2() -> Iterator[SolverPool]:
    """One pool of two solver processes shared by every MT/2PMT test."""
    with SolverPool(2) as pool:
        yield pool
