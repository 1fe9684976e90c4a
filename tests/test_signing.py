"""Signed artifacts: nodes refuse anything unsigned, tampered, or signed by a stranger."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fades.errors import (
    ArtifactError,
    ArtifactFormatError,
    ArtifactQuarantined,
    BuildError,
    SignatureError,
)
from fades.functions.artifact import _HEAD, Artifact, create, parse
from fades.functions.build import build_core, build_function, build_python
from fades.functions.keys import SigningKey, TrustStore
from fades.functions.store import FunctionStore

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "functions"
SOURCE = b"def main(data, params):\n    return 1\n"


@pytest.fixture
def trust(signing_key: SigningKey) -> TrustStore:
    return TrustStore([signing_key.public])


@pytest.fixture
def art(signing_key: SigningKey) -> Artifact:
    return create("python", "one", SOURCE, key=signing_key)


def sections(a: Artifact) -> tuple[int, int]:
    """Offsets of the manifest and the payload in ``a.to_bytes()``."""
    return _HEAD.size, _HEAD.size + len(a.manifest_bytes) + len(a.signature)


def test_a_signed_artifact_round_trips_and_verifies(art: Artifact, trust: TrustStore) -> None:
    again = parse(art.to_bytes())
    again.verify(trust)
    assert again == art
    assert again.digest == art.digest
    assert again.digest.startswith("sha256:") and len(again.digest) == 7 + 64
    assert len(art.to_bytes()) == len(art)


def test_a_tampered_payload_is_refused(art: Artifact, trust: TrustStore) -> None:
    raw = bytearray(art.to_bytes())
    raw[-3] ^= 0x01
    with pytest.raises(SignatureError, match=r"payload does not match .* \(tampered\)"):
        parse(bytes(raw)).verify(trust)


def test_a_payload_swapped_for_another_is_refused(art: Artifact, trust: TrustStore) -> None:
    _, pay = sections(art)
    evil = art.to_bytes()[:pay] + b"import os\ndef main(data, params):\n    return 2\n"
    with pytest.raises(SignatureError, match="tampered"):
        parse(evil).verify(trust)


def test_a_tampered_manifest_is_refused(art: Artifact, trust: TrustStore) -> None:
    # Point the manifest at a new payload (same length so the framing still parses):
    # the manifest no longer matches its signature.
    evil_payload = SOURCE.replace(b"1", b"2")
    manifest = dict(art.manifest, payload_sha256=hashlib.sha256(evil_payload).hexdigest())
    mbytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    assert len(mbytes) == len(art.manifest_bytes)
    forged = Artifact(manifest, mbytes, art.signature, evil_payload)
    with pytest.raises(SignatureError, match=r"signature does not match its manifest"):
        parse(forged.to_bytes()).verify(trust)


def test_a_flipped_manifest_byte_is_refused(art: Artifact, trust: TrustStore) -> None:
    man, _ = sections(art)
    raw = bytearray(art.to_bytes())
    i = man + art.manifest_bytes.index(b'"one"') + 1
    raw[i] = ord("x")  # name "one" -> "xne"
    forged = parse(bytes(raw))
    assert forged.name == "xne"
    with pytest.raises(SignatureError, match="signature does not match its manifest"):
        forged.verify(trust)


def test_a_tampered_signature_is_refused(art: Artifact, trust: TrustStore) -> None:
    _, pay = sections(art)
    raw = bytearray(art.to_bytes())
    raw[pay - 1] ^= 0x80
    with pytest.raises(SignatureError, match="signature does not match"):
        parse(bytes(raw)).verify(trust)


def test_an_unsigned_artifact_is_refused(trust: TrustStore) -> None:
    unsigned = create("python", "nosig", SOURCE, key=None)
    assert unsigned.signature == b""
    with pytest.raises(SignatureError, match="is unsigned; nodes run only signed artifacts"):
        parse(unsigned.to_bytes()).verify(trust)


def test_an_artifact_whose_signature_was_stripped_is_refused(
    art: Artifact, trust: TrustStore
) -> None:
    stripped = Artifact(art.manifest, art.manifest_bytes, b"", art.payload)
    with pytest.raises(SignatureError, match="unsigned"):
        parse(stripped.to_bytes()).verify(trust)


def test_an_artifact_signed_by_an_untrusted_key_is_refused(trust: TrustStore) -> None:
    stranger = SigningKey.generate("stranger")
    foreign = create("python", "foreign", SOURCE, key=stranger)
    with pytest.raises(SignatureError) as err:
        parse(foreign.to_bytes()).verify(trust)
    msg = str(err.value)
    assert f"signed by key {stranger.id}, which this node does not trust" in msg
    assert trust.ids()[0] in msg  # names whom it does trust


def test_a_signer_id_forged_to_a_trusted_key_is_refused(
    trust: TrustStore, signing_key: SigningKey
) -> None:
    stranger = SigningKey.generate("stranger")
    manifest = {"name": "x", "kind": "python", "abi": "fades-py/1", "signer": signing_key.id}
    manifest["payload_sha256"] = hashlib.sha256(SOURCE).hexdigest()
    mbytes = json.dumps(manifest, sort_keys=True).encode()
    forged = Artifact(manifest, mbytes, stranger.sign(mbytes), SOURCE)
    with pytest.raises(SignatureError, match="signature does not match"):
        parse(forged.to_bytes()).verify(trust)


def test_a_node_that_trusts_nobody_refuses_everything(art: Artifact) -> None:
    with pytest.raises(SignatureError, match=r"trusted: none"):
        art.verify(TrustStore())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "bad magic"),
        (b"NOTFADES" + bytes(12), "bad magic"),
        (struct.pack("<8sIII", b"FADESART", 9, 0, 0), "unsupported artifact version 9"),
        (struct.pack("<8sIII", b"FADESART", 1, 500, 0) + b"{}", "truncated"),
        (struct.pack("<8sIII", b"FADESART", 1, 3, 0) + b"{{{", "not JSON"),
        (struct.pack("<8sIII", b"FADESART", 1, 2, 0) + b"{}", "lacks 'name'"),
    ],
)
def test_malformed_artifact_bytes_are_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(ArtifactFormatError, match=message):
        parse(data)


def test_a_signature_of_the_wrong_length_is_refused(art: Artifact) -> None:
    head = struct.pack("<8sIII", b"FADESART", 1, len(art.manifest_bytes), 10)
    with pytest.raises(SignatureError, match="Ed25519 uses 64"):
        parse(head + art.manifest_bytes + bytes(10) + art.payload)


# --- the node's store ---------------------------------------------------------------------------
def test_the_store_refuses_a_tampered_artifact_on_the_way_in(
    tmp_path: Path, art: Artifact, trust: TrustStore
) -> None:
    store = FunctionStore(tmp_path / "artifacts", trust)
    raw = bytearray(art.to_bytes())
    raw[-1] ^= 0x01
    with pytest.raises(SignatureError, match="tampered"):
        store.add(bytes(raw))
    assert list((tmp_path / "artifacts").glob("*.fart")) == []
    with pytest.raises(ArtifactError, match="no function named 'one'"):
        store.get("one")


def test_the_store_refuses_an_artifact_from_an_untrusted_signer(
    tmp_path: Path, trust: TrustStore
) -> None:
    store = FunctionStore(tmp_path / "artifacts", trust)
    with pytest.raises(SignatureError, match="does not trust"):
        store.add(create("python", "f", SOURCE, key=SigningKey.generate()).to_bytes())
    assert store.names() == {}


def test_an_artifact_file_tampered_at_rest_is_refused_when_loaded(
    tmp_path: Path, art: Artifact, trust: TrustStore
) -> None:
    FunctionStore(tmp_path / "artifacts", trust).add(art)
    (path,) = (tmp_path / "artifacts").glob("*.fart")
    raw = bytearray(path.read_bytes())
    raw[-2] ^= 0x01  # inside the payload
    path.write_bytes(bytes(raw))
    reopened = FunctionStore(tmp_path / "artifacts", trust)  # a node restart
    with pytest.raises(ArtifactQuarantined, match=r"payload does not match .* \(tampered\)"):
        reopened.get("one")
    with pytest.raises(ArtifactQuarantined, match="tampered"):
        reopened.get(art.digest)
    assert not path.exists() and [q.file for q in reopened.quarantined] == [path.name]


def test_an_artifact_file_replaced_at_rest_by_another_artifact_is_refused(
    tmp_path: Path, art: Artifact, trust: TrustStore, signing_key: SigningKey
) -> None:
    FunctionStore(tmp_path / "artifacts", trust).add(art)
    (path,) = (tmp_path / "artifacts").glob("*.fart")
    other = create("python", "one", b"def main(d, p):\n    return 666\n", key=signing_key)
    path.write_bytes(other.to_bytes())  # validly signed, but not what the file name says
    reopened = FunctionStore(tmp_path / "artifacts", trust)
    with pytest.raises(ArtifactQuarantined, match="altered"):
        reopened.get(art.digest)
    assert reopened.names() == {}  # the file's own (valid) content is not indexed either


def test_an_artifact_file_tampered_at_rest_is_refused_by_a_node(
    prepare_home: Callable[..., Path],
    open_node: Callable[..., Any],
    make_task: Callable[..., dict[str, Any]],
) -> None:
    from fades.node import Node

    home = prepare_home(functions={"one": SOURCE.decode()})
    probe = Node(home, autostart=False)
    digest = probe.functions.resolve("one")
    probe.close()
    path = home / "artifacts" / f"{digest.removeprefix('sha256:')}.fart"
    raw = bytearray(path.read_bytes())
    raw[-2] ^= 0x01
    path.write_bytes(bytes(raw))
    node = open_node(home)
    with pytest.raises(ArtifactQuarantined, match="tampered"):
        node.orchestrator.submit(make_task("one", memory_mib=32))
    assert node.orchestrator.store.list() == []


def test_the_newest_artifact_of_a_name_wins(
    tmp_path: Path, trust: TrustStore, signing_key: SigningKey
) -> None:
    store = FunctionStore(tmp_path / "artifacts", trust)
    old = create("python", "f", SOURCE, key=signing_key, extra={"created": 1})
    new = create("python", "f", SOURCE + b"#v2\n", key=signing_key, extra={"created": 2})
    store.add(new)
    store.add(old)
    assert store.resolve("f") == new.digest
    assert FunctionStore(tmp_path / "artifacts", trust).resolve("f") == new.digest


# --- keys and builds ------------------------------------------------------------------------------
def test_a_saved_key_loads_back_and_is_private(tmp_path: Path) -> None:
    key = SigningKey.generate("k")
    priv, _ = key.save(tmp_path)
    assert priv.stat().st_mode & 0o777 == 0o600
    assert SigningKey.load(priv).id == key.id
    assert TrustStore.from_dir(tmp_path).ids() == [key.id]
    with pytest.raises(FileExistsError):
        key.save(tmp_path)


def test_building_signs_with_the_given_key(signing_key: SigningKey) -> None:
    art = build_function(EXAMPLES / "aqi.py", key=signing_key)
    assert art.kind == "python" and art.signer == signing_key.id and art.name == "aqi"
    art.verify(TrustStore([signing_key.public]))


def test_building_a_function_without_its_entry_fails(tmp_path: Path) -> None:
    src = tmp_path / "f.py"
    src.write_text("def helper():\n    pass\n")
    with pytest.raises(BuildError, match=r"defines no top-level function 'main' \(found: helper\)"):
        build_python(src, key=None)
    src.write_text("def main(:\n")
    with pytest.raises(BuildError, match="syntax error"):
        build_python(src, key=None)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_a_python_function_artifact_is_at_most_64_kib(
    path: Path, signing_key: SigningKey, runtime_artifact: Artifact
) -> None:
    art = build_function(path, key=signing_key)
    assert len(art) <= 64 * 1024
    assert art.payload == path.read_bytes()  # only the source travels
    assert runtime_artifact.kind == "runtime"
    assert len(runtime_artifact) > 1 << 20  # the interpreter travels separately, once


def test_the_example_core_module_builds(signing_key: SigningKey) -> None:
    art = build_core(EXAMPLES / "mean_core.wat", key=signing_key)
    assert art.kind == "core" and art.payload[:4] == b"\0asm"
