"""The device command audit of ``controller.db`` (table ``device_audit``; used by
:mod:`fades.devices.commands`): one row per actuator command, who sent it (tenant, source),
what (node, device, command, args), when, and how it ended. A row is written "pending" before
the command is sent and finished with its outcome, so a command id is sent at most once per
controller store.

:class:`DeviceAudit` is a part of :class:`~fades.controller.store.ControllerStore`, sharing
its connection and lock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any


class DeviceAudit:
    """The audit methods of :class:`~fades.controller.store.ControllerStore`."""

    _db: sqlite3.Connection
    _lock: threading.RLock
    _audit_ready: bool = False

    def _audit_table(self) -> None:
        if self._audit_ready:
            return
        with self._lock:
            self._db.executescript(
                "CREATE TABLE IF NOT EXISTS device_audit ("
                " seq INTEGER PRIMARY KEY AUTOINCREMENT, command_id TEXT NOT NULL UNIQUE,"
                " at REAL NOT NULL, tenant TEXT NOT NULL, source TEXT NOT NULL,"
                " node TEXT NOT NULL, device TEXT NOT NULL, command TEXT NOT NULL,"
                " args TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '');"
                "CREATE INDEX IF NOT EXISTS device_audit_by_tenant ON device_audit (tenant, seq);"
            )
        self._audit_ready = True

    def add_audit(
        self,
        command_id: str,
        *,
        at: float,
        tenant: str,
        source: str,
        node: str,
        device: str,
        command: str,
        args: dict[str, Any],
        outcome: str,
        detail: str = "",
    ) -> bool:
        """Record a command; False (and nothing changed) if ``command_id`` is recorded."""
        self._audit_table()
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO device_audit (command_id, at, tenant, source, node,"
                " device, command, args, outcome, detail) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (command_id, at, tenant, source, node, device, command,
                 json.dumps(args, sort_keys=True), outcome, detail),
            )  # fmt: skip
        return cur.rowcount == 1

    def finish_audit(self, command_id: str, outcome: str, detail: str = "") -> None:
        """Set the outcome of a recorded command."""
        self._audit_table()
        with self._lock:
            self._db.execute(
                "UPDATE device_audit SET outcome = ?, detail = ? WHERE command_id = ?",
                (outcome, detail, command_id),
            )

    def audit(self, tenant: str, limit: int = 100) -> Sequence[dict[str, Any]]:
        """The tenant's commands, newest first."""
        self._audit_table()
        with self._lock:
            rows = self._db.execute(
                "SELECT at, tenant, source, node, device, command, args, outcome, detail,"
                " command_id FROM device_audit WHERE tenant = ? ORDER BY seq DESC LIMIT ?",
                (tenant, limit),
            ).fetchall()
        keys = ("at", "tenant", "source", "node", "device", "command", "args", "outcome",
                "detail", "command_id")  # fmt: skip
        out = [dict(zip(keys, r, strict=True)) for r in rows]
        for r in out:
            r["args"] = json.loads(r["args"])
        return out
