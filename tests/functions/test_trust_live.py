"""Trust changes take effect on a running node: no restart after ``fades keys trust``.

A node opens its TrustStore and FunctionStore once. These tests open both, then change the
node's ``trusted/`` folder (through the real CLI where that is what an operator runs), and
use the same objects afterwards.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fades.errors import ArtifactError, SignatureError
from fades.functions.artifact import create
from fades.functions.keys import SigningKey, TrustStore, install_trusted, public_pem
from fades.functions.store import FunctionStore

from .forge import SOURCE
from .test_store import drop


@pytest.fixture
def home(tmp_path: Path, signing_key: SigningKey) -> Path:
    """A node folder that trusts ``signing_key`` only."""
    (tmp_path / "trusted").mkdir()
    (tmp_path / "trusted" / f"{signing_key.id}.pub").write_bytes(public_pem(signing_key.public))
    return tmp_path


def keys_trust(home: Path, pub: Path) -> None:
    """``fades keys trust PUB --home HOME``, a separate process, as an operator runs it."""
    proc = subprocess.run(
        [sys.executable, "-m", "fades", "keys", "trust", str(pub), "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=240,
        env=dict(os.environ, FADES_HOME=str(home)),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_a_store_opened_before_keys_trust_uses_the_artifact_after_it(
    home: Path, tmp_path: Path
) -> None:
    colleague = SigningKey.generate("colleague")
    _, pub = colleague.save(tmp_path / "colleague-keys")
    art = create("python", "theirs", SOURCE, key=colleague)
    path = drop(home / "artifacts", art.to_bytes())
    trust = TrustStore.from_dir(home / "trusted")
    store = FunctionStore(home / "artifacts", trust)  # the running node's store
    assert "does not trust" in store.skipped[path.name]
    with pytest.raises(ArtifactError, match="no function named 'theirs'"):
        store.resolve("theirs")

    keys_trust(home, pub)

    assert store.resolve("theirs") == art.digest  # same store object, no restart
    assert store.get("theirs").payload == SOURCE
    assert store.names() == {"theirs": art.digest}
    assert store.skipped == {} and path.exists()
    assert colleague.id in trust


def test_an_upload_refused_for_its_signer_is_accepted_once_the_key_is_trusted(
    home: Path, tmp_path: Path
) -> None:
    colleague = SigningKey.generate("colleague")
    _, pub = colleague.save(tmp_path / "colleague-keys")
    store = FunctionStore(home / "artifacts", TrustStore.from_dir(home / "trusted"))
    art = create("python", "late", SOURCE, key=colleague)
    with pytest.raises(SignatureError, match=f"signed by key {colleague.id}, which this node"):
        store.add(art.to_bytes())
    install_trusted(home / "trusted", pub)  # what `fades keys trust` does
    assert store.add(art.to_bytes()).digest == store.resolve("late") == art.digest


def test_a_removed_key_file_is_no_longer_trusted(home: Path, signing_key: SigningKey) -> None:
    trust = TrustStore.from_dir(home / "trusted")
    art = create("python", "f", SOURCE, key=signing_key)
    art.verify(trust)
    version = trust.version
    (home / "trusted" / f"{signing_key.id}.pub").unlink()
    assert signing_key.id not in trust and trust.version > version
    fresh = create("python", "g", SOURCE, key=signing_key)
    with pytest.raises(SignatureError, match="does not trust"):
        fresh.verify(trust)


def test_a_bad_key_file_dropped_in_later_is_ignored_with_a_warning(
    home: Path, signing_key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    trust = TrustStore.from_dir(home / "trusted")
    other = SigningKey.generate("other")
    (home / "trusted" / "junk.pub").write_text("not a key")
    install_trusted(home / "trusted", _pub_file(home, other))
    with caplog.at_level(logging.WARNING, logger="fades.functions.keys"):
        assert other.id in trust and signing_key.id in trust
    assert "junk.pub ignored" in caplog.text


def test_keys_added_in_code_survive_a_reload(home: Path) -> None:
    trust = TrustStore.from_dir(home / "trusted")
    extra = SigningKey.generate("extra")
    trust.add(extra.public)
    install_trusted(home / "trusted", _pub_file(home, SigningKey.generate("third")))
    assert trust.refresh() and extra.id in trust


def test_an_unchanged_folder_is_not_read_again(home: Path) -> None:
    trust = TrustStore.from_dir(home / "trusted")
    version = trust.version
    for _ in range(1000):
        assert not trust.refresh()
    assert trust.version == version


def _pub_file(home: Path, key: SigningKey) -> Path:
    p = home / f"{key.name}.pem"
    p.write_bytes(public_pem(key.public))
    return p


def test_the_ids_a_running_node_reports_follow_keys_trust(
    home: Path, signing_key: SigningKey, tmp_path: Path
) -> None:
    # A node's heartbeat lists trust.ids(); the controller refuses uploads no node trusts,
    # so a stale list kept refusing a key the operator had just trusted.
    trust = TrustStore.from_dir(home / "trusted")
    assert trust.ids() == [signing_key.id]
    other = SigningKey.generate("other")
    _, pub = other.save(tmp_path / "elsewhere")
    keys_trust(home, pub)
    assert trust.ids() == sorted([signing_key.id, other.id])
