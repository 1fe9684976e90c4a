"""The controller's upload runs the same checks (it calls ``parse`` + ``verify``), and a bad
file in the controller's own ``artifacts/`` folder does not stop it from starting.

Real nats-server, real controller (in process), real files.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from fades.aiostop import wait_for
from fades.errors import ArtifactFormatError, ArtifactRejected
from fades.functions.artifact import create
from fades.functions.keys import SigningKey, public_pem

from .forge import CORE_WAT, forged, raw_artifact

TOKENS = {"token-facilities-0123": "facilities"}
WASI = (
    '(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32)'
    " (result i32)))" + CORE_WAT.strip()[len("(module") :]
)


def test_upload_refuses_what_breaks_a_rule_and_a_restart_survives_a_bad_file(
    nats_server: Any, tmp_path: Path, signing_key: SigningKey
) -> None:
    from fades.controller import Controller

    home = tmp_path / "controller"
    (home / "trusted").mkdir(parents=True)
    (home / "trusted" / f"{signing_key.id}.pub").write_bytes(public_pem(signing_key.public))
    wasm = bytes(wasmtime.wat2wasm(CORE_WAT))
    bad = {
        "name": forged(signing_key, name="tenant/../f"),
        "created": forged(signing_key, created="yesterday"),
        "python-is-wasm": forged(signing_key, wasm),
        "core-not-wasm": forged(signing_key, kind="core", abi="fades-core/1"),
        "core-imports-wasi": create(
            "core", "w", bytes(wasmtime.wat2wasm(WASI)), key=signing_key
        ).to_bytes(),
        "manifest-string": raw_artifact(b'"x"', b"", signing_key),
    }

    async def go() -> None:
        ctl = await Controller(home, nats=nats_server.url, tokens=TOKENS).start()
        try:
            for case, raw in bad.items():
                with pytest.raises(ArtifactFormatError) as err:
                    await ctl.upload(raw)
                assert isinstance(err.value, ArtifactRejected), case
            info = await ctl.upload(create("core", "mean", wasm, key=signing_key).to_bytes())
            assert info.name == "mean"  # and it keeps serving
        finally:
            await ctl.stop()
        junk = home / "artifacts" / ("e" * 64 + ".fart")
        junk.write_bytes(raw_artifact(b"[" * 100_000 + b"]" * 100_000, b"", signing_key))
        again = await Controller(home, nats=nats_server.url, tokens=TOKENS).start()
        try:
            assert list(again.functions.names()) == ["mean"]
            assert not junk.exists() and again.functions.quarantined
        finally:
            await again.stop()

    asyncio.run(wait_for(go(), 120))
