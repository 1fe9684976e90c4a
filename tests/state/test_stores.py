"""Checkpoint stores: round trip, fencing (split brain), integrity, digest binding, limits —
the same guarantees over SQLite, the in-memory bus and a real nats-server."""

from __future__ import annotations

import time
from typing import Any

import pytest

from fades.errors import CheckpointRejected, Fenced, StateError
from fades.state.base import Checkpoint
from fades.state.kv import KvCheckpoints
from fades.state.local import LocalCheckpoints
from fades.state.seal import seal, state_key, unseal

DIGEST = "a" * 64
OTHER = "b" * 64


def ckpt(seq: int, state: bytes = b"s", *, node: str = "n1", digest: str = DIGEST) -> Checkpoint:
    return Checkpoint("t1", digest, node, seq, state, time.time())


def test_round_trip_and_release(stores: tuple[Any, Any]) -> None:
    a, _ = stores
    assert a.load("t1", digest=DIGEST) is None
    lease = a.claim("t1", "n1")
    assert a.load("t1", digest=DIGEST) is None  # claimed, nothing saved yet
    lease = a.save(lease, ckpt(3, b"\x00state\xff"))
    lease = a.save(lease, ckpt(4, b"newer"))
    got = a.load("t1", digest=DIGEST)
    assert got is not None and got.seq == 4 and got.state == b"newer" and got.node == "n1"
    a.release(lease)
    assert a.load("t1", digest=DIGEST) is None


def test_split_brain_stale_instance_is_fenced(stores: tuple[Any, Any]) -> None:
    a, b = stores
    la = a.save(a.claim("t1", "n1"), ckpt(5, b"A5"))
    lb = b.claim("t1", "n2")  # the task moved while n1 was partitioned
    assert lb.token > la.token
    assert b.load("t1", digest=DIGEST).state == b"A5"  # the claim keeps the checkpoint
    with pytest.raises(Fenced, match="task moved: another instance holds it \\(node n2\\)"):
        a.save(la, ckpt(6, b"A6-stale"))
    lb = b.save(lb, ckpt(6, b"B6", node="n2"))
    assert a.load("t1", digest=DIGEST).state == b"B6"
    # the stale instance stays fenced out, and its release does not drop the new owner
    with pytest.raises(Fenced):
        a.save(la, ckpt(7, b"A7"))
    a.release(la)
    assert b.load("t1", digest=DIGEST).state == b"B6"
    assert b.save(lb, ckpt(7, b"B7", node="n2")).token > lb.token


def test_other_digest_refused(stores: tuple[Any, Any]) -> None:
    a, _ = stores
    a.save(a.claim("t1", "n1"), ckpt(1))
    with pytest.raises(CheckpointRejected, match="written by function aaaaaaaa"):
        a.load("t1", digest=OTHER)
    assert a.load("t1", digest=DIGEST) is not None  # the store keeps serving


def test_state_over_the_limit_refused(stores: tuple[Any, Any], monkeypatch: Any) -> None:
    monkeypatch.setenv("FADES_STATE_MAX_BYTES", "2048")
    a, _ = stores
    if isinstance(a, KvCheckpoints):
        a.limit = 2048
    lease = a.claim("t1", "n1")
    with pytest.raises(StateError, match="exceeds the limit of 2048 bytes"):
        a.save(lease, ckpt(1, b"x" * 5000))
    a.save(lease, ckpt(1, b"x" * 100))  # a good save after the bad one


def test_tampered_record_refused() -> None:
    record = bytearray(seal(b"k" * 32, ckpt(2, b"counter=2")))
    record[-40] ^= 1  # flip a bit of the state
    with pytest.raises(CheckpointRejected, match="integrity check failed"):
        unseal(b"k" * 32, bytes(record), task_id="t1", digest=DIGEST)
    good = seal(b"k" * 32, ckpt(2))
    with pytest.raises(CheckpointRejected, match="integrity check failed"):
        unseal(b"another key....." * 2, good, task_id="t1", digest=DIGEST)
    with pytest.raises(CheckpointRejected, match="written for task t1"):
        unseal(b"k" * 32, good, task_id="t2", digest=DIGEST)


def test_tampered_in_sqlite_refused(tmp_path: Any) -> None:
    import sqlite3

    store = LocalCheckpoints(tmp_path / "state.db", b"k" * 32)
    store.save(store.claim("t1", "n1"), ckpt(1, b"count=1"))
    db = sqlite3.connect(tmp_path / "state.db")
    (rec,) = db.execute("SELECT record FROM state").fetchone()
    db.execute("UPDATE state SET record=?", (bytes(rec).replace(b"count=1", b"count=9"),))
    db.commit()
    with pytest.raises(CheckpointRejected, match="integrity"):
        store.load("t1", digest=DIGEST)
    store.close()


def test_state_key_file_and_env(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("FADES_STATE_KEY", raising=False)
    k1 = state_key(tmp_path)
    assert (tmp_path / "state.key").stat().st_mode & 0o777 == 0o600
    assert state_key(tmp_path) == k1 and len(k1) == 32
    monkeypatch.setenv("FADES_STATE_KEY", "shared-by-every-node-of-the-fabric")
    assert state_key(tmp_path) != k1 and state_key(None) == state_key(tmp_path)
    monkeypatch.setenv("FADES_STATE_KEY", "short")
    with pytest.raises(ValueError, match="at least 16"):
        state_key(tmp_path)


def test_an_ended_task_is_not_claimed_again(stores: tuple[Any, Any]) -> None:
    """A failover that reaches another node after the task finished (its outcome still on the
    way) must not run it again from nothing: the fabric store keeps an 'ended' record."""
    from fades.errors import StateEnded

    a, b = stores
    if isinstance(a, LocalCheckpoints):
        pytest.skip("one node's own store: no other node can claim the task")
    la = a.save(a.claim("t1", "n1"), ckpt(180, b"final"))
    a.release(la)  # the task ended on n1
    assert b.load("t1", digest=DIGEST) is None and b.owner("t1") is None
    with pytest.raises(StateEnded, match="already ended on node n1"):
        b.claim("t1", "n2")
    with pytest.raises(Fenced, match="ended on node n1"):
        a.save(la, ckpt(181, b"late"))
