"""The artifact repository on a Bus (MemoryBus here; NATS in tests/fabric): the by-name
index follows the version order, not the upload order."""

from __future__ import annotations

import asyncio
import random
import textwrap
from pathlib import Path

from tests.bus.conftest import Connect

from fades.bus.memory import MemoryBus
from fades.fabric.repository import ArtifactRepository, order_key
from fades.functions.artifact import Artifact, canonical
from fades.functions.build import build_python
from fades.functions.keys import SigningKey


def versions(tmp_path: Path, key: SigningKey, n: int) -> list[Artifact]:
    """``n`` versions of one function, oldest first (the repository checks format only)."""
    src = tmp_path / "count.py"
    src.write_text(textwrap.dedent("def main(data, params):\n    return 1\n"))
    art = build_python(src, key=key)
    out = []
    for i in range(n):
        manifest = dict(art.manifest)
        manifest["created"] = 1_000 + i
        if "created_ns" in manifest:
            manifest["created_ns"] = (1_000 + i) * 1_000_000_000
        out.append(Artifact(manifest, canonical(manifest), art.signature, art.payload))
    assert sorted(out, key=order_key) == out
    return out


def test_an_older_upload_does_not_move_a_name_back(
    tmp_path: Path, signing_key: SigningKey, connect: Connect
) -> None:
    old, new = versions(tmp_path, signing_key, 2)

    async def main() -> None:
        bus = await connect()
        try:
            repo = await ArtifactRepository.open(bus)
            await repo.put(new)
            await repo.put(old)  # uploaded last, built first
            assert await repo.resolve("count") == new.digest
            assert await repo.get(old.digest) == old.to_bytes()  # still held, by digest
            assert {r.digest for r in await repo.list()} == {old.digest, new.digest}
        finally:
            await bus.close()
        repo2 = await ArtifactRepository.open(MemoryBus())
        await repo2.put(old)
        await repo2.put(new)
        assert await repo2.resolve("count") == new.digest

    asyncio.run(main())


def test_concurrent_uploads_leave_the_newest(
    tmp_path: Path, signing_key: SigningKey, connect: Connect
) -> None:
    """Over NATS the puts interleave at every round trip: only compare-and-set keeps the
    newest (MemoryBus runs each put through, so there it checks the order only)."""
    arts = versions(tmp_path, signing_key, 6)

    async def main() -> None:
        buses = [await connect() for _ in range(3)]
        try:
            for seed in range(3):
                shuffled = list(arts)
                random.Random(seed).shuffle(shuffled)
                repos = [await ArtifactRepository.open(b) for b in buses]
                index = repos[0].index
                for k in await index.keys():
                    await index.delete(k)
                await asyncio.gather(*(repos[i % 3].put(a) for i, a in enumerate(shuffled)))
                assert await repos[0].resolve("count") == arts[-1].digest
        finally:
            for b in buses:
                await b.close()

    asyncio.run(main())
