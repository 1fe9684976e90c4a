"""Checkpoints in SQLite in the node's folder (``state.db``), for a node without a fabric.

Same semantics as the KV store (:mod:`fades.state.kv`): one row per stateful task holding its
owner, its fencing token and its newest sealed checkpoint. Tokens come from one counter for
the whole database, so they only grow (like a stream's revisions): a lease from before a
release and a new claim can never match again. Several processes may share the file (a node
and a ``fades task run`` on the same folder); each write is one immediate transaction.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from fades.errors import Fenced
from fades.state.base import Checkpoint, Lease
from fades.state.seal import seal, unseal

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS state ("
    " task_id TEXT PRIMARY KEY, owner TEXT NOT NULL, token INTEGER NOT NULL, record BLOB)",
    "CREATE TABLE IF NOT EXISTS state_counter (id INTEGER PRIMARY KEY CHECK (id = 0),"
    " value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO state_counter(id, value) VALUES (0, 0)",
)


class LocalCheckpoints:
    """:class:`~fades.state.base.Checkpoints` over a SQLite file. Thread-safe."""

    def __init__(self, path: str | Path, key: bytes) -> None:
        self.path = Path(path)
        self._key = key
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        for stmt in _SCHEMA:
            self._db.execute(stmt)

    def _next_token(self) -> int:
        self._db.execute("UPDATE state_counter SET value = value + 1 WHERE id = 0")
        row = self._db.execute("SELECT value FROM state_counter WHERE id = 0").fetchone()
        return int(row[0])

    def claim(self, task_id: str, node: str) -> Lease:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                token = self._next_token()
                self._db.execute(
                    "INSERT INTO state(task_id, owner, token, record) VALUES (?, ?, ?, NULL) "
                    "ON CONFLICT(task_id) DO UPDATE SET owner = excluded.owner, "
                    "token = excluded.token",
                    (task_id, node, token),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return Lease(task_id, node, token)

    def save(self, lease: Lease, ckpt: Checkpoint) -> Lease:
        if ckpt.task_id != lease.task_id:
            raise ValueError(
                f"checkpoint of task {ckpt.task_id} saved with a lease on {lease.task_id}"
            )
        record = seal(self._key, ckpt)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                token = self._next_token()
                cur = self._db.execute(
                    "UPDATE state SET token = ?, record = ? WHERE task_id = ? AND token = ?",
                    (token, record, lease.task_id, lease.token),
                )
                if cur.rowcount != 1:
                    self._db.execute("ROLLBACK")
                    raise _fenced(lease, self._owner(lease.task_id))
                self._db.execute("COMMIT")
            except Fenced:
                raise
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return Lease(lease.task_id, lease.node, token)

    def _owner(self, task_id: str) -> str | None:
        row = self._db.execute("SELECT owner FROM state WHERE task_id = ?", (task_id,)).fetchone()
        return None if row is None else str(row[0])

    def owner(self, task_id: str) -> tuple[str, int] | None:
        """``(node, token)`` of the task's live instance, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT owner, token FROM state WHERE task_id = ?", (task_id,)
            ).fetchone()
        return None if row is None else (str(row[0]), int(row[1]))

    def load(self, task_id: str, *, digest: str) -> Checkpoint | None:
        with self._lock:
            row = self._db.execute(
                "SELECT record FROM state WHERE task_id = ?", (task_id,)
            ).fetchone()
        if row is None or row[0] is None:
            return None
        return unseal(self._key, bytes(row[0]), task_id=task_id, digest=digest)

    def release(self, lease: Lease) -> None:
        with self._lock:
            self._db.execute(
                "DELETE FROM state WHERE task_id = ? AND token = ?", (lease.task_id, lease.token)
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _fenced(lease: Lease, owner: str | None) -> Fenced:
    holder = f"node {owner}" if owner else "nobody (the task was released)"
    return Fenced(
        f"task moved: another instance holds it ({holder}); node {lease.node}'s lease "
        f"{lease.token} is stale and its checkpoint was not written",
        task_id=lease.task_id,
        node=lease.node,
    )
