"""A synthetic office testbed, after the seeds' five-room sensor deployment.

Five rooms (``room1`` .. ``room5``), each with one device per sensor type. An occupancy
process drives every signal:

* workdays (Monday to Friday) only; each room has its own arrival and departure times per
  day, an occasional day off, a lunch break during which people usually leave, and
  15-minute blocks in which the room is or is not in use (its "popularity");
* ``light`` (lux): daylight through the windows (a daily arc times the day's cloudiness)
  plus the lamps while the room is occupied;
* ``audio`` (dB): a quiet background, talk while occupied;
* ``proximity``: Bluetooth devices seen nearby, about one and a half per person;
* ``co2`` (ppm): relaxes towards 420 ppm plus a share per person, with ventilation lag;
* ``temperature`` (°C): heating set point on workdays, a night set-back, body heat;
* ``humidity`` (%): a room baseline, breath moisture, falling as the room warms;
* ``occupancy``: the ground truth (0/1), to evaluate occupancy-detection functions.

Times of day are taken in UTC. Everything is vectorised with numpy and deterministic for a
given ``seed`` (and the other arguments).

The occupancy model and the six sensor models of one room are in
:mod:`fades.testbed.office_model`; this module turns them into readings (a period in chunks,
or live values at any instant) and stores them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from fades.errors import DatasetError
from fades.sensors.units import SENSOR_TYPES as SENSOR_TYPES  # re-exported
from fades.sensors.units import UNITS as UNITS
from fades.testbed.office_model import DAY, F64, RoomState, room_state, sample

if TYPE_CHECKING:
    from fades.broker.connectors.sqlite import SQLiteConnector


def room_names(rooms: int = 5, first_room: int = 1) -> list[str]:
    """``room<first_room>`` .. ``room<first_room + rooms - 1>``."""
    if rooms < 0 or first_room < 1:
        raise DatasetError(f"rooms must be >= 0 and first_room >= 1 (got {rooms}, {first_room})")
    return [f"room{i}" for i in range(first_room, first_room + rooms)]


def device_name(location: str, sensor_type: str) -> str:
    """The single device of ``sensor_type`` in ``location``, e.g. ``room1-temperature-1``."""
    return f"{location}-{sensor_type}-1"


@dataclass(frozen=True, slots=True)
class SensorSeries:
    """Readings of one device: timestamps (epoch seconds, ascending) and values."""

    sensor_type: str
    unit: str
    location: str
    device: str
    ts: F64
    value: F64

    def __len__(self) -> int:
        return len(self.ts)


def _default_start(days: float) -> datetime:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=math.ceil(days))


def iter_office(
    days: float,
    rate_s: float = 10.0,
    seed: int = 0,
    start: datetime | None = None,
    *,
    rooms: int = 5,
    first_room: int = 1,
    sensor_types: Sequence[str] | None = None,
    chunk_days: float = 7.0,
) -> Iterator[SensorSeries]:
    """Yield the testbed's readings as :class:`SensorSeries` chunks.

    For each room, the readings of every sensor type are yielded in time chunks of
    ``chunk_days``, so a long period never needs all its readings in memory at once. The
    output depends on ``chunk_days`` only through the noise draws.

    Args:
        days: length of the period.
        rate_s: seconds between two readings of one device.
        seed: seed of the random generators.
        start: first instant (UTC if naive); default: midnight UTC ``ceil(days)`` days ago.
        rooms: number of rooms (``room1``..``roomN``).
        first_room: number of the first room, so that several nodes can hold distinct rooms
            (``room<first_room>`` .. ``room<first_room + rooms - 1>``); a room's readings do
            not depend on which other rooms are generated with it.
        sensor_types: subset of :data:`SENSOR_TYPES` to produce (default: all).
    """
    if days <= 0 or rate_s <= 0 or chunk_days <= 0:
        raise DatasetError(
            f"days, rate_s and chunk_days must be positive (got {days}, {rate_s}, {chunk_days})"
        )
    types = list(sensor_types) if sensor_types is not None else list(SENSOR_TYPES)
    unknown = sorted(set(types) - set(SENSOR_TYPES))
    if unknown:
        raise DatasetError(
            f"unknown testbed sensor type(s) {', '.join(unknown)}; known: {', '.join(SENSOR_TYPES)}"
        )
    start = start or _default_start(days)
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    t0 = start.timestamp()
    span = days * DAY
    minutes = math.ceil(span / 60.0) + 2
    chunk = chunk_days * DAY
    n_chunks = math.ceil(span / chunk)
    for r, room in enumerate(room_names(rooms, first_room), start=first_room - 1):
        state = room_state(np.random.default_rng([seed, r]), start, minutes)
        for s, stype in enumerate(SENSOR_TYPES):
            if stype not in types:
                continue
            # a fixed phase per device so that devices do not all fire at the same instant
            phase = float(np.random.default_rng([seed, r, s, 1 << 20]).uniform(0.0, rate_s))
            for c in range(n_chunks):
                lo, hi = c * chunk, min((c + 1) * chunk, span)
                k0 = math.ceil((lo - phase) / rate_s)
                k1 = math.ceil((hi - phase) / rate_s)
                if k1 <= k0:
                    continue
                rel = phase + np.arange(k0, k1, dtype=np.float64) * rate_s
                rng = np.random.default_rng([seed, r, s, c])
                yield SensorSeries(
                    sensor_type=stype,
                    unit=UNITS[stype],
                    location=room,
                    device=device_name(room, stype),
                    ts=t0 + rel,
                    value=sample(state, stype, rel / 60.0, rng),
                )


def generate_office(
    days: float,
    rate_s: float = 10.0,
    seed: int = 0,
    start: datetime | None = None,
    *,
    rooms: int = 5,
    first_room: int = 1,
    sensor_types: Sequence[str] | None = None,
) -> list[SensorSeries]:
    """All readings of the testbed, one :class:`SensorSeries` per device (see
    :func:`iter_office` for the arguments)."""
    merged: dict[str, list[SensorSeries]] = {}
    for part in iter_office(
        days,
        rate_s,
        seed,
        start,
        rooms=rooms,
        first_room=first_room,
        sensor_types=sensor_types,
        chunk_days=days,
    ):
        merged.setdefault(part.device, []).append(part)
    return [
        SensorSeries(
            p[0].sensor_type,
            p[0].unit,
            p[0].location,
            p[0].device,
            np.concatenate([x.ts for x in p]),
            np.concatenate([x.value for x in p]),
        )
        for p in merged.values()
    ]


class LiveOffice:
    """The testbed's signals at any instant, to stream them as live sensors.

    The value of a device at time ``ts`` is a pure function of ``(seed, room, sensor type,
    ts)``: a room's hidden state (occupancy, light, heating, ...) is modelled one UTC day at
    a time, seeded by the seed, the room and the day number, and the noise of each reading is
    seeded by its time in milliseconds. Two simulators with the same seed therefore publish
    the same readings, and a restarted one carries on where it stopped. The signals follow
    the same models as :func:`iter_office` (not the same random draws).

    Args:
        rooms, first_room: the rooms (see :func:`room_names`).
        seed: seed of the random generators (>= 0).
        sensor_types: subset of :data:`SENSOR_TYPES` (default: all).
    """

    _MINUTES = 1440 + 2

    def __init__(
        self,
        rooms: int = 5,
        first_room: int = 1,
        seed: int = 0,
        sensor_types: Sequence[str] | None = None,
    ) -> None:
        if seed < 0:
            raise DatasetError(f"seed must be >= 0 (got {seed})")
        types = list(sensor_types) if sensor_types is not None else list(SENSOR_TYPES)
        unknown = sorted(set(types) - set(SENSOR_TYPES))
        if unknown:
            raise DatasetError(
                f"unknown testbed sensor type(s) {', '.join(unknown)}; "
                f"known: {', '.join(SENSOR_TYPES)}"
            )
        self.seed = seed
        self.rooms = room_names(rooms, first_room)
        self.sensor_types = [t for t in SENSOR_TYPES if t in types]
        self._index = {room: first_room - 1 + i for i, room in enumerate(self.rooms)}
        self._states: dict[tuple[int, int], RoomState] = {}

    def devices(self) -> list[tuple[str, str]]:
        """Every ``(location, sensor_type)`` pair, room by room."""
        return [(room, t) for room in self.rooms for t in self.sensor_types]

    def phase(self, location: str, sensor_type: str, rate_s: float) -> float:
        """Offset in ``[0, rate_s)`` of the device's readings, as in :func:`iter_office`."""
        r, s = self._index[location], SENSOR_TYPES.index(sensor_type)
        return float(np.random.default_rng([self.seed, r, s, 1 << 20]).uniform(0.0, rate_s))

    def _state(self, r: int, day: int) -> RoomState:
        state = self._states.get((r, day))
        if state is None:
            for key in [k for k in self._states if k[0] == r and k[1] < day - 1]:
                del self._states[key]
            start = datetime.fromtimestamp(day * DAY, UTC)
            rng = np.random.default_rng([self.seed, r, day, 1 << 21])
            state = room_state(rng, start, self._MINUTES)
            self._states[(r, day)] = state
        return state

    def value(self, location: str, sensor_type: str, ts: float) -> float:
        """The reading of ``location``'s ``sensor_type`` device at ``ts`` (epoch seconds)."""
        if location not in self._index:
            raise DatasetError(f"unknown room {location!r}; this office has {self.rooms}")
        if sensor_type not in SENSOR_TYPES:
            raise DatasetError(
                f"unknown testbed sensor type {sensor_type!r}; known: {', '.join(SENSOR_TYPES)}"
            )
        if not math.isfinite(ts) or ts < 0:
            raise DatasetError(f"timestamp must be a non-negative number (got {ts})")
        r, s = self._index[location], SENSOR_TYPES.index(sensor_type)
        day = int(ts // DAY)
        minute_pos = np.array([(ts - day * DAY) / 60.0])
        rng = np.random.default_rng([self.seed, r, s, round(ts * 1000.0)])
        return float(sample(self._state(r, day), sensor_type, minute_pos, rng)[0])


def expected_rows(
    days: float, rate_s: float = 10.0, *, rooms: int = 5, sensor_types: int | None = None
) -> int:
    """About how many readings :func:`iter_office` yields (exact up to one per device)."""
    n_types = len(SENSOR_TYPES) if sensor_types is None else sensor_types
    return round(days * DAY / rate_s) * rooms * n_types


def populate(
    store: SQLiteConnector,
    days: float,
    rate_s: float = 10.0,
    seed: int = 0,
    start: datetime | None = None,
    *,
    rooms: int = 5,
    first_room: int = 1,
    sensor_types: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    replace: bool = False,
) -> int:
    """Write the testbed into ``store``; returns the number of readings written.

    Idempotent for a range: the generated devices' readings between the first and the last
    instant of the period are deleted first, so populating the same (or an overlapping)
    period again never leaves two interleaved series. ``replace`` deletes every reading of
    the generated devices first, whatever its time. ``progress(done, total)`` is called after
    each chunk (``total`` is an estimate).
    """
    if days <= 0 or rate_s <= 0:
        raise DatasetError(f"days and rate_s must be positive (got {days}, {rate_s})")
    types = list(SENSOR_TYPES) if sensor_types is None else list(sensor_types)
    first = start or _default_start(days)
    t0 = (first if first.tzinfo is not None else first.replace(tzinfo=UTC)).timestamp()
    store.clear(
        location=room_names(rooms, first_room),
        device=[device_name(r, t) for r in room_names(rooms, first_room) for t in types],
        start=None if replace else t0,
        end=None if replace else t0 + days * DAY,
    )
    total = expected_rows(
        days,
        rate_s,
        rooms=rooms,
        sensor_types=None if sensor_types is None else len(set(sensor_types)),
    )
    done = 0
    for part in iter_office(
        days,
        rate_s,
        seed,
        start,
        rooms=rooms,
        first_room=first_room,
        sensor_types=sensor_types,
        chunk_days=1.0,
    ):
        done += store.write_columns(
            part.ts, part.value, part.sensor_type, part.location, part.device, part.unit
        )
        if progress is not None:
            progress(done, max(total, done))
    return done
