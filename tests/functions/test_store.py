"""A node's function store cannot be bricked or hijacked by what lies in its folder.

Real files in a temp node folder; each case writes the hostile file straight into
``artifacts/`` (what a careless operator, a bad sync or an attacker with write access does)
and opens a new store, as a restarted node or the next CLI command does.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from fades.errors import ArtifactError, ArtifactFormatError, ArtifactRejected
from fades.functions.artifact import Artifact, create, parse
from fades.functions.keys import SigningKey, TrustStore
from fades.functions.store import FunctionStore
from fades.functions.validate import MAX_ARTIFACT_BYTES

from .forge import SOURCE, forged, raw_artifact


@pytest.fixture
def trust(signing_key: SigningKey) -> TrustStore:
    return TrustStore([signing_key.public])


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


def drop(folder: Path, raw: bytes, name: str | None = None) -> Path:
    """Write ``raw`` into the folder under its digest's file name (or ``name``)."""
    folder.mkdir(parents=True, exist_ok=True)
    if name is None:
        try:
            name = parse(raw).digest.removeprefix("sha256:") + ".fart"
        except ArtifactError:
            name = "0" * 64 + ".fart"
    path = folder / name
    path.write_bytes(raw)
    return path


def test_an_unsigned_later_artifact_does_not_take_over_a_name(
    folder: Path, trust: TrustStore, signing_key: SigningKey
) -> None:
    good = FunctionStore(folder, trust).add(create("python", "f", SOURCE, key=signing_key))
    later = good.created_ns + 10**12
    evil = drop(folder, forged(None, b"def main(d, p):\n    return 666\n", created_ns=later))
    store = FunctionStore(folder, trust)
    assert store.resolve("f") == good.digest
    assert store.get("f").payload == SOURCE
    assert not evil.exists()
    assert [q.file for q in store.quarantined] == [evil.name]
    assert "unsigned" in store.quarantined[0].reason


def test_an_unsigned_later_runtime_does_not_take_over_the_python_runtime(
    folder: Path, trust: TrustStore, signing_key: SigningKey
) -> None:
    component = b"\0asm\x0d\0\x01\0" + b"\0" * 64
    good = create("runtime", "fades-python-runtime", component, key=signing_key)
    FunctionStore(folder, trust).add(good)
    drop(
        folder,
        forged(None, component + b"evil", name="fades-python-runtime", kind="runtime",
               created_ns=good.created_ns + 1),
    )  # fmt: skip
    assert FunctionStore(folder, trust).runtime().digest == good.digest


def test_an_untrusted_signer_is_not_indexed_but_left_in_place(
    folder: Path, trust: TrustStore, signing_key: SigningKey
) -> None:
    stranger = SigningKey.generate("stranger")
    path = drop(folder, create("python", "g", SOURCE, key=stranger).to_bytes())
    store = FunctionStore(folder, trust)
    assert store.names() == {} and path.exists() and store.quarantined == []
    assert "does not trust" in store.skipped[path.name]
    trust.add(stranger.public)  # the operator trusts the key: the next load indexes it
    assert FunctionStore(folder, trust).names() == {"g": "sha256:" + path.stem}


DEEP = b"[" * 100_000 + b"]" * 100_000
STRING = b'"name kind abi payload_sha256"'  # a str: "name" in it is True
BAD_FILES = {
    "manifest is a JSON string": lambda k: raw_artifact(STRING, SOURCE, k),
    "manifest 100,000 levels deep": lambda k: raw_artifact(DEEP, SOURCE, k),
    "created is not a time": lambda k: forged(k, created="yesterday"),
    "created_ns is a float": lambda k: forged(k, created_ns=1.5),
    "name with a path separator": lambda k: forged(k, name="../f"),
    "binary garbage": lambda k: os.urandom(4096),
    "empty file": lambda k: b"",
    "python payload that is wasm": lambda k: forged(k, b"\0asm\x01\0\0\0"),
    "truncated": lambda k: create("python", "t", SOURCE, key=k).to_bytes()[:30],
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_is_quarantined_and_the_rest_still_loads(
    case: str,
    folder: Path,
    trust: TrustStore,
    signing_key: SigningKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = FunctionStore(folder, trust).add(create("python", "good", SOURCE, key=signing_key))
    bad = drop(folder, BAD_FILES[case](signing_key))
    with caplog.at_level(logging.WARNING, logger="fades.functions.store"):
        store = FunctionStore(folder, trust)
    assert store.names() == {"good": good.digest}
    assert store.get("good").payload == SOURCE
    assert not bad.exists()
    (item,) = store.quarantined
    assert item.file == bad.name and item.path.exists() and item.reason
    assert any(
        "quarantined" in r.getMessage() and bad.name in r.getMessage() for r in caplog.records
    )
    note = json.loads(item.path.with_name(item.path.name + ".why").read_text())
    assert note["file"] == bad.name and note["reason"] == item.reason
    listed = FunctionStore(folder, trust).quarantine()  # a later process still reports it
    assert [q.file for q in listed] == [bad.name]
    store.add(create("python", "after", SOURCE + b"#2\n", key=signing_key))  # keeps working
    assert set(FunctionStore(folder, trust).names()) == {"good", "after"}


def test_files_that_are_not_plain_files_or_too_large_are_quarantined_unread(
    folder: Path, trust: TrustStore, signing_key: SigningKey
) -> None:
    FunctionStore(folder, trust).add(create("python", "good", SOURCE, key=signing_key))
    (folder / ("1" * 64 + ".fart")).mkdir()
    (folder / ("2" * 64 + ".fart")).symlink_to("/dev/zero")  # reading it would never end
    with open(folder / ("3" * 64 + ".fart"), "wb") as f:
        f.truncate(MAX_ARTIFACT_BYTES + 1)  # sparse: costs no disk
    store = FunctionStore(folder, trust)
    assert list(store.names()) == ["good"]
    reasons = {q.file[0]: q.reason for q in store.quarantined}
    assert "not a regular file" in reasons["1"] and "not a regular file" in reasons["2"]
    assert f"an artifact is at most {MAX_ARTIFACT_BYTES}" in reasons["3"]


def test_a_file_not_named_by_its_digest_is_quarantined(
    folder: Path, trust: TrustStore, signing_key: SigningKey
) -> None:
    raw = create("python", "f", SOURCE, key=signing_key).to_bytes()
    drop(folder, raw, name="f" * 64 + ".fart")
    store = FunctionStore(folder, trust)
    assert store.names() == {}
    assert "does not hold sha256:" in store.quarantined[0].reason


def test_a_signed_artifact_with_a_bad_field_cannot_be_added(
    folder: Path, trust: TrustStore, signing_key: SigningKey
) -> None:
    store = FunctionStore(folder, trust)
    for raw in (forged(signing_key, created="yesterday"), forged(signing_key, b"\0asm\x01\0\0\0")):
        with pytest.raises(ArtifactRejected):
            store.add(raw)
    assert list(folder.glob("*.fart")) == []


def test_a_tampered_newer_version_is_quarantined_and_the_older_one_resolves(
    folder: Path, trust: TrustStore, signing_key: SigningKey
) -> None:
    store = FunctionStore(folder, trust)
    v1 = store.add(create("python", "f", SOURCE, key=signing_key))
    v2 = store.add(create("python", "f", SOURCE + b"#v2\n", key=signing_key))
    assert store.resolve("f") == v2.digest
    path = folder / (v2.digest.removeprefix("sha256:") + ".fart")
    raw = bytearray(path.read_bytes())
    raw[-2] ^= 1
    path.write_bytes(bytes(raw))
    again = FunctionStore(folder, trust)
    assert again.resolve("f") == v1.digest
    with pytest.raises(ArtifactError, match=r"quarantined.*tampered"):
        again.get(v2.digest)


# --- versions ---------------------------------------------------------------------------------
def test_versions_built_in_the_same_second_resolve_to_the_newest_in_a_new_process(
    folder: Path, trust: TrustStore, signing_key: SigningKey
) -> None:
    arts = [create("python", "f", SOURCE + f"#{i}\n".encode(), key=signing_key) for i in range(40)]
    assert len({a.manifest["created"] for a in arts}) < len(arts)  # several share a second
    assert [a.order_key for a in arts] == sorted(a.order_key for a in arts)
    store = FunctionStore(folder, trust)
    for a in reversed(arts):  # added oldest last
        store.add(a)
    assert store.resolve("f") == arts[-1].digest
    assert FunctionStore(folder, trust).resolve("f") == arts[-1].digest


def test_versions_with_the_same_build_time_order_by_digest_in_every_process(
    folder: Path, trust: TrustStore, signing_key: SigningKey
) -> None:
    same = {"created": 7, "created_ns": 7_000_000_000}
    a = create("python", "f", SOURCE, key=signing_key, extra=same)
    b = create("python", "f", SOURCE + b"#b\n", key=signing_key, extra=same)
    winner = max(a, b, key=lambda x: x.order_key)
    for order in ((a, b), (b, a)):
        d = folder / f"{order[0].digest[7:15]}"
        store = FunctionStore(d, trust)
        for x in order:
            store.add(x)
        assert store.resolve("f") == winner.digest
        assert FunctionStore(d, trust).resolve("f") == winner.digest


def test_artifacts_from_before_nanosecond_times_order_by_created_seconds(
    signing_key: SigningKey,
) -> None:
    old = parse(forged(signing_key, created=100, created_ns=None))
    new = parse(forged(signing_key, SOURCE + b"#\n", created=101, created_ns=None))
    assert old.created_ns == 100 * 10**9 and old.order_key < new.order_key


def test_an_artifact_object_is_checked_on_add_too(
    folder: Path, trust: TrustStore, signing_key: SigningKey
) -> None:
    art = parse(forged(signing_key, b"\0asm\x01\0\0\0"))
    assert isinstance(art, Artifact)
    with pytest.raises(ArtifactFormatError, match="payload is WebAssembly"):
        FunctionStore(folder, trust).add(art)


def test_read_artifact_refuses_huge_and_special_files_before_reading(tmp_path: Path) -> None:
    from fades.functions.store import read_artifact

    huge = tmp_path / "huge.fart"
    with open(huge, "wb") as f:
        f.truncate(10 * MAX_ARTIFACT_BYTES)
    with pytest.raises(ArtifactRejected, match="an artifact is at most"):
        read_artifact(huge)
    with pytest.raises(ArtifactFormatError, match="not a regular file"):
        read_artifact("/dev/zero")
    with pytest.raises(ArtifactFormatError, match="not a regular file"):
        read_artifact(tmp_path)
