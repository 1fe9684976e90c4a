"""The model of one office room of the testbed (:mod:`fades.testbed.generator`): a
minute-resolution hidden state driven by occupancy (:func:`room_state`), and the six sensors
read from it with their noise (:func:`sample`). Deterministic for a given random generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
from scipy.signal import lfilter, lfilter_zi

from fades.errors import DatasetError
from fades.sensors.units import SENSOR_TYPES

F64 = npt.NDArray[np.float64]

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class RoomState:
    """Minute-resolution hidden state of one room."""

    people: F64
    light: F64
    temperature: F64
    humidity: F64
    co2: F64


def smooth(target: F64, tau_min: float) -> F64:
    """First-order lag (time constant ``tau_min`` minutes), starting at steady state."""
    a = math.exp(-1.0 / tau_min)
    b, den = [1.0 - a], [1.0, -a]
    y, _ = lfilter(b, den, target, zi=lfilter_zi(b, den) * target[0])
    return np.asarray(y, np.float64)


def room_state(rng: np.random.Generator, start: datetime, minutes: int) -> RoomState:
    k = np.arange(minutes)
    sod0 = start.hour * 3600 + start.minute * 60 + start.second + start.microsecond / 1e6
    abs_s = sod0 + 60.0 * k
    day = (abs_s // DAY).astype(np.int64)
    hour = (abs_s % DAY) / 3600.0
    n_days = int(day[-1]) + 1
    weekday = (start.weekday() + np.arange(n_days)) % 7
    workday = (weekday < 5) & (rng.random(n_days) > 0.07)  # ~7% days off per room

    arrive = np.clip(rng.normal(8.6, 0.5, n_days), 7.0, 10.5)
    leave = np.clip(rng.normal(17.4, 0.7, n_days), 15.5, 20.0)
    lunch0 = np.clip(rng.normal(12.2, 0.25, n_days), 11.5, 13.0)
    lunch1 = lunch0 + rng.uniform(0.5, 1.0, n_days)
    lunch_out = rng.random(n_days) < 0.75
    popularity = rng.uniform(0.6, 0.95)
    capacity = int(rng.integers(1, 5))

    present = (
        workday[day]
        & (hour >= arrive[day])
        & (hour < leave[day])
        & ~(lunch_out[day] & (hour >= lunch0[day]) & (hour < lunch1[day]))
    )
    block = (60 * k + int(sod0)) // 900  # 15-minute blocks
    n_blocks = int(block[-1]) + 1
    in_use = rng.random(n_blocks) < popularity
    heads = 1 + rng.binomial(capacity - 1, 0.5, n_blocks)
    people = np.where(present & in_use[block], heads[block], 0).astype(np.float64)

    # light: daylight arc 6h-20h times cloudiness, plus lamps when occupied
    window = rng.uniform(120.0, 380.0)
    cloud = rng.uniform(0.35, 1.0, n_days)
    sun = np.clip(np.sin(np.pi * (hour - 6.0) / 14.0), 0.0, None) * window * cloud[day]
    lamps = rng.uniform(380.0, 520.0)
    light = sun + np.where(people > 0, lamps, 0.0)

    heating = workday[day] & (hour >= 6.0) & (hour < 19.0)
    setpoint = np.where(heating, 21.5, 18.5) + rng.normal(0.0, 0.4)
    outdoor = 0.6 * np.sin(2 * np.pi * (hour - 9.0) / 24.0)
    temperature = smooth(setpoint + outdoor + 0.35 * people, 90.0)

    co2 = smooth(420.0 + rng.uniform(280.0, 420.0) * people, 25.0)

    base_h = rng.uniform(36.0, 46.0)
    humidity = smooth(base_h + 1.6 * people - 1.8 * (temperature - 20.0), 40.0)
    return RoomState(people, light, temperature, humidity, co2)


def sample(
    state: RoomState,
    sensor_type: str,
    minute_pos: F64,
    rng: np.random.Generator,
) -> F64:
    idx = np.minimum(minute_pos.astype(np.int64), len(state.people) - 1)
    grid = np.arange(len(state.people), dtype=np.float64)
    n = len(minute_pos)
    people = state.people[idx]
    if sensor_type == "occupancy":
        return (people > 0).astype(np.float64)
    if sensor_type == "proximity":
        return rng.poisson(1.5 * people + 0.3).astype(np.float64)
    if sensor_type == "audio":
        talk = np.where(people > 0, 44.0 + 5.0 * np.log2(np.maximum(people, 1.0)), 31.0)
        bursts = np.where(rng.random(n) < 0.02, rng.uniform(5.0, 20.0, n), 0.0)
        return np.asarray(np.round(talk + rng.normal(0.0, 2.5, n) + bursts, 1), np.float64)
    if sensor_type == "light":
        v = np.interp(minute_pos, grid, state.light) + rng.normal(0.0, 6.0, n)
        return np.asarray(np.round(np.clip(v, 0.0, None)), np.float64)
    if sensor_type == "temperature":
        v = np.interp(minute_pos, grid, state.temperature)
        return np.asarray(np.round(v + rng.normal(0.0, 0.08, n), 2), np.float64)
    if sensor_type == "humidity":
        v = np.interp(minute_pos, grid, state.humidity)
        return np.asarray(np.round(np.clip(v + rng.normal(0.0, 0.4, n), 0.0, 100.0), 1), np.float64)
    if sensor_type == "co2":
        v = np.interp(minute_pos, grid, state.co2)
        return np.asarray(np.round(np.clip(v + rng.normal(0.0, 12.0, n), 350.0, None)), np.float64)
    raise DatasetError(
        f"unknown testbed sensor type {sensor_type!r}; known: {', '.join(SENSOR_TYPES)}"
    )
