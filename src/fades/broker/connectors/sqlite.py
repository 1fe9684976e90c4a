"""The node's local time-series store, in one SQLite file.

Schema (normalised, so that a reading costs three numbers on disk)::

    sensors(id INTEGER PRIMARY KEY, sensor_type, unit, location, device)
        UNIQUE (sensor_type, location, device)
    readings(sensor_id, ts REAL, value REAL, PRIMARY KEY (sensor_id, ts)) WITHOUT ROWID

``readings`` is clustered on ``(sensor_id, ts)``: the primary key *is* the index, so a time
window of one sensor is one contiguous range scan and no second copy of the rows exists. A
sensor holds at most one reading per timestamp; writing the same ``(sensor, ts)`` again
replaces the value; :meth:`SQLiteConnector.clear` deletes readings by sensor and time range.
The file runs in WAL mode, so readers never block the writer.

Every thread gets its own connection (SQLite connections must not be shared between
threads), writes are serialised by a lock.

The schema, the bounded count and the interruptible fetch share one connection and its progress
handler here; reading rows per sensor, row assembly and the encoding of written columns are in
``sqlite_rows.py``.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fades.broker.base import Dataset, DataSummary
from fades.broker.connectors.sqlite_rows import Categorical, Sensor, factorise, read_rows, window
from fades.errors import ConnectorError, RetrievalTimeLimitExceeded
from fades.task import Selector

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sensors (
    id INTEGER PRIMARY KEY,
    sensor_type TEXT NOT NULL,
    unit TEXT NOT NULL,
    location TEXT NOT NULL,
    device TEXT NOT NULL,
    UNIQUE (sensor_type, location, device)
);
CREATE TABLE IF NOT EXISTS readings (
    sensor_id INTEGER NOT NULL REFERENCES sensors(id),
    ts REAL NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (sensor_id, ts)
) WITHOUT ROWID;
"""

#: SQLite virtual-machine steps between two checks of a read's deadline (about 0.1 ms).
_PROGRESS_STEPS = 1000


class SQLiteConnector:
    """Readings in a local SQLite file; see the module docstring for the schema.

    Args:
        path: the database file; created (with its directory) if missing.
        timeout: seconds to wait for a lock held by another process.
    """

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._conn()
            conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConnectorError(
                f"cannot open SQLite store {self.path}: {exc}", connector="sqlite"
            ) from exc

    # --- connections ---------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.timeout, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA cache_size=-65536")
            conn.execute("PRAGMA mmap_size=268435456")
            conn.execute("PRAGMA temp_store=MEMORY")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def close(self) -> None:
        """Close every connection this store opened (in any thread)."""
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._local = threading.local()

    def __enter__(self) -> SQLiteConnector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- sensors -------------------------------------------------------------------------
    def _sensors(self, conn: sqlite3.Connection | None = None) -> list[Sensor]:
        rows = (
            (conn or self._conn())
            .execute("SELECT id, sensor_type, unit, location, device FROM sensors")
            .fetchall()
        )
        return [(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4])) for r in rows]

    def _sensor_id(
        self, conn: sqlite3.Connection, sensor_type: str, unit: str, location: str, device: str
    ) -> int:
        for name, v in (("sensor_type", sensor_type), ("location", location), ("device", device)):
            if not v:
                raise ConnectorError(f"a reading needs a non-empty {name}", connector="sqlite")
        row = conn.execute(
            "SELECT id, unit FROM sensors WHERE sensor_type=? AND location=? AND device=?",
            (sensor_type, location, device),
        ).fetchone()
        if row is None:
            cur = conn.execute(
                "INSERT INTO sensors(sensor_type, unit, location, device) VALUES (?,?,?,?)",
                (sensor_type, unit, location, device),
            )
            return int(cur.lastrowid or 0)
        if row[1] != unit:
            raise ConnectorError(
                f"sensor {device!r} ({sensor_type} at {location}) stores unit {row[1]!r}, "
                f"not {unit!r}",
                connector="sqlite",
            )
        return int(row[0])

    # --- writing -------------------------------------------------------------------------
    def add(
        self, ts: float, value: float, sensor_type: str, unit: str, location: str, device: str
    ) -> None:
        """Store one reading (slow path; use :meth:`write_columns` for bulk data)."""
        self.write_columns([ts], [value], sensor_type, location, device, unit)

    def write(self, dataset: Dataset) -> int:
        """Store every reading of ``dataset``; units come from ``dataset.units``."""
        if len(dataset) == 0:
            return 0
        st = np.asarray(dataset.labels["sensor_type"], dtype=object)[dataset.codes["sensor_type"]]
        unit_of = np.asarray(
            [dataset.units.get(s, "") for s in dataset.labels["sensor_type"]], dtype=object
        )
        return self.write_columns(
            dataset.ts,
            dataset.value,
            st,
            np.asarray(dataset.labels["location"], dtype=object)[dataset.codes["location"]],
            np.asarray(dataset.labels["device"], dtype=object)[dataset.codes["device"]],
            unit_of[dataset.codes["sensor_type"]],
        )

    def write_columns(
        self,
        ts: Sequence[float] | npt.NDArray[np.float64],
        value: Sequence[float] | npt.NDArray[np.float64],
        sensor_type: Categorical,
        location: Categorical,
        device: Categorical,
        unit: Categorical,
    ) -> int:
        """Bulk-store readings given as columns; returns the number of rows written.

        ``ts`` (epoch seconds) and ``value`` are sequences or arrays of equal length. Each
        categorical is either one string (the same for every reading) or a sequence of the
        same length.
        """
        ts_a = np.asarray(ts, np.float64).reshape(-1)
        val_a = np.asarray(value, np.float64).reshape(-1)
        n = len(ts_a)
        if len(val_a) != n:
            raise ConnectorError(
                f"ts has {n} entries but value has {len(val_a)}", connector="sqlite"
            )
        if n == 0:
            return 0
        if not np.all(np.isfinite(ts_a)):
            raise ConnectorError("timestamps must be finite numbers", connector="sqlite")
        uniques, combos, combo_inv = factorise(
            n,
            (
                ("sensor_type", sensor_type),
                ("location", location),
                ("device", device),
                ("unit", unit),
            ),
        )
        with self._write_lock:
            conn = self._conn()
            try:
                with conn:
                    ids = np.empty(len(combos), np.int64)
                    for i, k in enumerate(combos.tolist()):
                        parts: list[str] = []
                        for u in reversed(uniques):
                            k, r = divmod(k, len(u))
                            parts.append(u[r])
                        unit_s, dev_s, loc_s, st_s = parts
                        ids[i] = self._sensor_id(conn, st_s, unit_s, loc_s, dev_s)
                    sid = ids[combo_inv]
                    order = np.lexsort((ts_a, sid))
                    conn.executemany(
                        "INSERT OR REPLACE INTO readings(sensor_id, ts, value) VALUES (?,?,?)",
                        zip(
                            sid[order].tolist(),
                            ts_a[order].tolist(),
                            val_a[order].tolist(),
                            strict=True,
                        ),
                    )
            except sqlite3.Error as exc:
                raise ConnectorError(
                    f"writing {n} readings to {self.path} failed: {exc}", connector="sqlite"
                ) from exc
        return n

    # --- reading -------------------------------------------------------------------------
    @contextmanager
    def _bounded(self, deadline: float | None) -> Iterator[sqlite3.Connection]:
        """This thread's connection, its statements interrupted once ``deadline`` passes.

        An interrupted statement is rolled back by SQLite; no read snapshot or lock outlives
        the call, so other processes and later tasks on the same file are never held up.
        """
        conn = self._conn()
        if deadline is not None:
            conn.set_progress_handler(lambda: int(time.monotonic() > deadline), _PROGRESS_STEPS)
        try:
            yield conn
        except sqlite3.OperationalError as exc:
            if deadline is not None and time.monotonic() > deadline:
                raise RetrievalTimeLimitExceeded(0.0, connector="sqlite") from None
            raise ConnectorError(
                f"reading from SQLite store {self.path} failed: {exc}", connector="sqlite"
            ) from exc
        except sqlite3.Error as exc:
            raise ConnectorError(
                f"reading from SQLite store {self.path} failed: {exc}", connector="sqlite"
            ) from exc
        finally:
            if deadline is not None:
                conn.set_progress_handler(None, 0)
            if conn.in_transaction:  # never the case for reads; a guard, not a code path
                conn.rollback()

    def fetch(
        self,
        select: Selector,
        now: float | None = None,
        *,
        deadline: float | None = None,
        max_rows: int | None = None,
    ) -> Dataset:
        """The readings ``select`` selects, ordered by time (window ``since <= ts < until``).

        ``now`` (epoch seconds) anchors ``last_seconds``; by default the current time.
        ``deadline`` (a :func:`time.monotonic` value) interrupts the query when it passes
        (:class:`RetrievalTimeLimitExceeded`); more than ``max_rows`` rows raise
        :class:`InputTooLarge` after reading at most ``max_rows + 1`` of them.
        """
        with self._bounded(deadline) as conn:
            return read_rows(conn, self._match(conn, select), select, now, max_rows)

    def count_at_most(
        self, select: Selector, cap: int, *, now: float | None = None, deadline: float | None = None
    ) -> int:
        """Rows ``fetch(select)`` returns, or a number above ``cap`` if there are more.

        One bounded ``COUNT`` per matching sensor over the clustered index: at most
        ``cap + 1`` index entries are visited and no row is materialised.
        """
        if cap < 0:
            raise ValueError("cap must not be negative")
        with self._bounded(deadline) as conn:
            sensors = self._match(conn, select)
            where, args = window(select, now)
            want = cap if select.last is None else min(cap, select.last)
            sql = f"SELECT COUNT(*) FROM (SELECT 1 FROM readings WHERE {where} LIMIT ?)"
            total = 0
            for s in sensors:
                total += int(conn.execute(sql, (s[0], *args, want + 1 - total)).fetchone()[0])
                if total > want:
                    break
        return total if select.last is None else min(total, select.last)

    def _match(self, conn: sqlite3.Connection, select: Selector) -> list[Sensor]:
        st, loc, dev = select.sensor_types, select.locations, select.devices
        return [
            s
            for s in self._sensors(conn)
            if (st is None or s[1] in st)
            and (loc is None or s[3] in loc)
            and (dev is None or s[4] in dev)
        ]

    def clear(
        self,
        *,
        location: str | Sequence[str] | None = None,
        sensor_type: str | Sequence[str] | None = None,
        device: str | Sequence[str] | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> int:
        """Delete the readings of the matching sensors (all sensors if no filter is given)
        with ``start <= ts <= end`` (either end open if None); returns the rows deleted.

        A sensor left without readings is forgotten too.
        """

        def one(v: str | Sequence[str] | None) -> set[str] | None:
            return None if v is None else {v} if isinstance(v, str) else set(v)

        loc, st, dev = one(location), one(sensor_type), one(device)
        lo = -math.inf if start is None else float(start)
        hi = math.inf if end is None else float(end)
        deleted = 0
        with self._write_lock:
            conn = self._conn()
            with conn:
                for s in self._sensors(conn):
                    if (
                        (st and s[1] not in st)
                        or (loc and s[3] not in loc)
                        or (dev and s[4] not in dev)
                    ):
                        continue
                    deleted += conn.execute(
                        "DELETE FROM readings WHERE sensor_id=? AND ts BETWEEN ? AND ?",
                        (s[0], max(lo, -1e308), min(hi, 1e308)),
                    ).rowcount
                    if (
                        conn.execute(
                            "SELECT 1 FROM readings WHERE sensor_id=? LIMIT 1", (s[0],)
                        ).fetchone()
                        is None
                    ):
                        conn.execute("DELETE FROM sensors WHERE id=?", (s[0],))
        return deleted

    def describe(self) -> list[DataSummary]:
        """Rows and time span per (location, sensor type)."""
        rows = (
            self._conn()
            .execute(
                "SELECT s.location, s.sensor_type, s.unit, SUM(r.n), MIN(r.lo), MAX(r.hi) "
                "FROM (SELECT sensor_id, COUNT(*) AS n, MIN(ts) AS lo, MAX(ts) AS hi "
                "      FROM readings GROUP BY sensor_id) AS r "
                "JOIN sensors AS s ON s.id = r.sensor_id "
                "GROUP BY s.location, s.sensor_type, s.unit ORDER BY s.location, s.sensor_type"
            )
            .fetchall()
        )
        return [
            DataSummary(
                location=str(r[0]),
                sensor_type=str(r[1]),
                unit=str(r[2]),
                rows=int(r[3]),
                first_ts=float(r[4]),
                last_ts=float(r[5]),
            )
            for r in rows
        ]

    def sensor_keys(self) -> set[tuple[str, str]]:
        """The (location, sensor type) pairs of the sensors table (written on ingest, pruned
        by :meth:`clear`): a read of the small sensors table, not of the readings."""
        rows = self._conn().execute("SELECT DISTINCT location, sensor_type FROM sensors")
        return {(str(r[0]), str(r[1])) for r in rows}

    def count(self) -> int:
        """Number of readings stored."""
        return int(self._conn().execute("SELECT COUNT(*) FROM readings").fetchone()[0])

    def sensors(self) -> list[dict[str, str]]:
        """Every registered sensor: sensor_type, unit, location, device."""
        return [
            {"sensor_type": s[1], "unit": s[2], "location": s[3], "device": s[4]}
            for s in sorted(self._sensors(), key=lambda s: (s[3], s[1], s[4]))
        ]

    def __repr__(self) -> str:
        return f"SQLiteConnector({str(self.path)!r})"
