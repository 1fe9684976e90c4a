"""The event loop the controller and node agent processes run on (fades.loops)."""

from __future__ import annotations

import asyncio

import pytest

from fades.loops import ENV, runner


def test_uvloop_by_default_and_asyncio_when_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    uvloop = pytest.importorskip("uvloop")
    monkeypatch.delenv(ENV, raising=False)
    assert runner() is uvloop.run
    seen: list[str] = []

    async def main() -> None:
        seen.append(type(asyncio.get_running_loop()).__module__)

    runner()(main())
    assert seen == ["uvloop"]
    monkeypatch.setenv(ENV, "off")
    assert runner() is asyncio.run
    runner()(main())
    assert seen[1].startswith("asyncio")
