"""The same fades version (same runtime source hash) gives one runtime artifact, signed once."""

from __future__ import annotations

from pathlib import Path

from fades import paths
from fades.functions.build import build_runtime, runtime_source_hash
from fades.functions.keys import SigningKey, TrustStore
from fades.functions.store import FunctionStore


def _signed_copies(key: SigningKey) -> list[Path]:
    return sorted((paths.cache() / "runtime").glob(f"runtime-*-{key.id}.fart"))


def test_two_builds_give_one_digest_and_one_file(tmp_path: Path) -> None:
    key = SigningKey.generate("reuse")
    first = build_runtime(key=key)
    second = build_runtime(key=key)
    assert second.digest == first.digest
    assert first.manifest["source_hash"] == runtime_source_hash()
    copies = _signed_copies(key)
    assert [p.name for p in copies] == [f"runtime-{runtime_source_hash()}-{key.id}.fart"]
    store = FunctionStore(tmp_path / "artifacts", TrustStore([key.public]))
    store.add(first.to_bytes())
    store.add(second.to_bytes())
    assert len(list((tmp_path / "artifacts").glob("*.fart"))) == 1
    assert store.runtimes() == [first.digest]
    for p in copies:
        p.unlink()


def test_an_installed_runtime_is_reused_and_another_key_signs_its_own(tmp_path: Path) -> None:
    key = SigningKey.generate("installed")
    installed = build_runtime(key=key)
    for p in _signed_copies(key):
        p.unlink()  # only the node's store holds it now
    store = FunctionStore(tmp_path / "artifacts", TrustStore([key.public]))
    store.add(installed)
    assert build_runtime(key=key, store=store).digest == installed.digest
    assert not _signed_copies(key), "reused from the store: nothing signed or written"
    other = SigningKey.generate("other")
    theirs = build_runtime(key=other, store=store)
    assert theirs.signer == other.id and theirs.digest != installed.digest
    for p in _signed_copies(other):
        p.unlink()


def test_a_damaged_signed_copy_is_not_reused(tmp_path: Path) -> None:
    key = SigningKey.generate("damaged")
    first = build_runtime(key=key)
    (copy,) = _signed_copies(key)
    data = bytearray(copy.read_bytes())
    data[-100] ^= 0xFF  # payload no longer matches the signed digest
    copy.write_bytes(bytes(data))
    again = build_runtime(key=key)
    again.verify(TrustStore([key.public]))
    assert again.digest != first.digest  # signed anew (new build time), and the copy replaced
    assert build_runtime(key=key).digest == again.digest
    copy.unlink()


def test_the_cache_keeps_only_a_few_signed_copies() -> None:
    keys = [SigningKey.generate(f"k{i}") for i in range(6)]
    for key in keys:
        build_runtime(key=key)
    folder = paths.cache() / "runtime"
    assert len(list(folder.glob("runtime-*-*.fart"))) <= 4
    assert _signed_copies(keys[-1]), "the newest is kept"
    for key in keys:
        for p in _signed_copies(key):
            p.unlink()
