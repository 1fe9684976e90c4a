"""The fabric against a real nats-server: launcher, streams, repository, chunked transfer."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from fades.bus.nats import NatsBus
from fades.errors import AccessDenied, ArtifactError, ArtifactFormatError, FabricError
from fades.fabric import EmbeddedNats, connect
from fades.fabric.repository import ArtifactRepository
from fades.fabric.server import port_open
from fades.fabric.streams import ensure_streams, nodes_bucket
from fades.fabric.subjects import check_token
from fades.fabric.transfer import reply_error, request_chunks, send_chunks
from fades.functions.artifact import Artifact, parse


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_embedded_server_starts_on_free_loopback_ports_and_stops(tmp_path: Any) -> None:
    server = EmbeddedNats(tmp_path / "n")
    server.start()
    assert server.running
    assert port_open("127.0.0.1", server.port)
    assert server.mqtt_port is not None and port_open("127.0.0.1", server.mqtt_port)
    assert f"listen: 127.0.0.1:{server.port}" in server.config_text()
    server.stop()
    assert not server.running
    assert not port_open("127.0.0.1", server.port)
    assert (tmp_path / "n" / "jetstream").is_dir()  # the store is in our folder, not /tmp/nats


def test_connect_to_nothing_fails_fast_with_a_clear_message() -> None:
    from fades.fabric.server import free_port

    with pytest.raises(FabricError, match="cannot reach NATS"):
        run(connect(f"nats://127.0.0.1:{free_port()}", timeout=0.3))


def test_node_names_become_subject_tokens() -> None:
    assert check_token("edge-1") == "edge-1"
    with pytest.raises(FabricError, match="not valid"):
        check_token("a.b")


def test_streams_and_buckets_are_created_once_and_survive_a_restart(tmp_path: Any) -> None:
    server = EmbeddedNats(tmp_path / "n").start()

    async def first() -> None:
        nc = await connect(server.url)
        bus = NatsBus(nc)
        await ensure_streams(bus)
        await ensure_streams(bus)  # idempotent
        kv = await nodes_bucket(bus)
        await kv.put("edge1", b"hello")
        await nc.close()

    async def second() -> bytes:
        nc = await connect(server.url)
        kv = await nodes_bucket(NatsBus(nc))
        entry = await kv.get("edge1")
        await nc.close()
        return entry.value if entry is not None else b""

    try:
        run(first())
        server.stop()
        server.start()
        assert run(second()) == b"hello"
    finally:
        server.stop()


def test_repository_round_trips_a_multi_part_runtime(
    nats_server: EmbeddedNats, runtime_artifact: Artifact
) -> None:
    async def go() -> tuple[bytes, Any, list[Any]]:
        nc = await connect(nats_server.url)
        repo = await ArtifactRepository.open(NatsBus(nc))
        rec = await repo.put(runtime_artifact)
        data = await repo.get(await repo.runtime_digest(runtime_artifact.abi))
        listed = await repo.list()
        await nc.close()
        return data, rec, listed

    data, rec, listed = run(go())
    assert rec.parts > 1  # 19 MB in 1 MiB parts
    assert data == runtime_artifact.to_bytes()
    assert parse(data).digest == runtime_artifact.digest
    assert [r.digest for r in listed] == [runtime_artifact.digest]


def test_repository_detects_an_altered_part(
    nats_server: EmbeddedNats, runtime_artifact: Artifact
) -> None:
    async def go() -> None:
        nc = await connect(nats_server.url)
        repo = await ArtifactRepository.open(NatsBus(nc))
        rec = await repo.put(runtime_artifact)
        h = rec.digest.removeprefix("sha256:")
        part = await repo.objects.get(f"{h}.{rec.parts - 1}") or b""
        await repo.objects.put(f"{h}.{rec.parts - 1}", part[:-1] + bytes([part[-1] ^ 1]))
        try:
            with pytest.raises(ArtifactFormatError, match="altered"):
                await repo.get(rec.digest)
            with pytest.raises(ArtifactError, match="no function named"):
                await repo.get("nope")
        finally:
            await nc.close()

    run(go())


@pytest.mark.parametrize("size", [0, 1, 64 * 1024, 3 * 1024 * 1024 + 17])
def test_chunked_reply_reassembles_exactly(nats_server: EmbeddedNats, size: int) -> None:
    payload = os.urandom(size)

    async def go() -> tuple[bytes, dict[str, Any], list[int]]:
        server_nc = await connect(nats_server.url)
        client_nc = await connect(nats_server.url)

        async def serve(msg: Any) -> None:
            await send_chunks(server_nc, msg.reply, payload, {"n": size}, chunk=50_000, window=3)

        await server_nc.subscribe("svc", cb=serve)
        await server_nc.flush()
        seen: list[int] = []
        data, meta = await request_chunks(client_nc, "svc", {"q": 1}, progress=seen.append)
        await client_nc.close()
        await server_nc.close()
        return data, meta, seen

    data, meta, seen = run(go())
    assert data == payload and meta == {"n": size}
    assert len(seen) == -(-size // 50_000)
    if size:
        assert seen[-1] == size


def test_remote_errors_come_back_as_the_same_error_class(nats_server: EmbeddedNats) -> None:
    async def go() -> None:
        a = await connect(nats_server.url)
        b = await connect(nats_server.url)

        async def serve(msg: Any) -> None:
            await reply_error(a, msg.reply, AccessDenied("tenant x may not read co2"))

        await a.subscribe("svc", cb=serve)
        await a.flush()
        try:
            with pytest.raises(AccessDenied, match="may not read co2"):
                await request_chunks(b, "svc", {})
            with pytest.raises(FabricError, match="nobody serves"):
                await request_chunks(b, "nobody", {}, timeout=0.5)
        finally:
            await a.close()
            await b.close()

    run(go())


def test_an_external_nats_with_credentials_works_and_bad_ones_fail_clearly(
    tmp_path: Any, prepare_home: Any
) -> None:
    """A server that requires a user and password, as a site's own NATS would."""
    import subprocess
    import sys
    import time

    from fades.fabric.connect import FabricSettings, redact
    from fades.fabric.streams import nodes_bucket

    server = EmbeddedNats(
        tmp_path / "auth",
        mqtt=False,
        extra_config="authorization { user: edge, password: s3cret }",
    ).start()
    good = f"nats://edge:s3cret@127.0.0.1:{server.port}"
    home = prepare_home("authnode")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fades", "node", "start", "--name", "authnode", "--no-ingest",
         "--data", str(home), "--nats", good, "--heartbeat", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip

    async def registered() -> bool:
        nc = await connect(FabricSettings(url=good))
        try:
            kv = await nodes_bucket(NatsBus(nc))
            for _ in range(300):  # a node process starts in 1-3 s; allow for a busy machine
                if await kv.get("authnode") is not None:
                    return True
                await asyncio.sleep(0.1)
            return False
        finally:
            await nc.close()

    try:
        assert run(registered()), "the node did not register through the authenticated server"
        t0 = time.monotonic()
        with pytest.raises(FabricError, match=r"did not accept.*Authorization") as err:
            run(connect(f"nats://edge:h4x0r@127.0.0.1:{server.port}", timeout=2))
        assert "h4x0r" not in str(err.value)  # the password is not echoed
        assert time.monotonic() - t0 < 10
        assert redact("nats://u:pw@h:1,nats://v:x@k:2") == "nats://u:***@h:1,nats://v:***@k:2"
    finally:
        proc.terminate()
        proc.wait(20)
        server.stop()
