"""The controller log keeps applying records after its watchdog reads the stream again.

Found by killing one of three hub servers under ``fades up --hub 3 --controllers 2``: the
watchdog resubscribed (a new inbox queue) while the apply loop still waited on the old one,
so that controller applied nothing more ("did not apply a node_outcome within 60 s").
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fades.aiostop import wait_for
from fades.bus.nats import NatsBus
from fades.controller.replica import StreamLog
from fades.controller.store import ControllerStore


def _fn(name: str) -> dict[str, Any]:
    return {"name": name, "tenant": "t", "digest": "sha256:" + "0" * 64, "created_ns": 1, "at": 1.0}


def test_records_written_after_a_resubscribe_are_applied(nats_server: Any, tmp_path: Path) -> None:
    async def main() -> None:
        bus = await NatsBus.connect(nats_server.url)
        store = ControllerStore(tmp_path / "controller.db")
        log = StreamLog(store, bus)
        await log.start()
        try:
            await wait_for(log.write("publish_function", _fn("a")), 20)
            await asyncio.sleep(0.2)  # the apply loop now waits on the (old) inbox
            await log._resubscribe()  # what the watchdog does when it thinks the reader stalled
            await wait_for(log.write("publish_function", _fn("b")), 20)
            assert store.function_owner("b") is not None
        finally:
            await log.stop()
            await bus.close()

    asyncio.run(main())
