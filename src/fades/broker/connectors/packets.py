"""A packet connector: a capture of network packets served as a dataset, for detectors.

Each packet is one reading (:func:`to_dataset`): ``ts``; ``value`` =
destination port * 65536 + source port; ``sensor_type`` = ``"tcp:FLAGS"`` or ``"udp:"``;
``location`` = source address; ``device`` = destination address. So the broker, the
selectors (a source is a ``location``, a time window is ``last_seconds``), the FDS1 wire
format and the sandbox need nothing new, and a detector reads columns, not JSON.

The capture is a JSON-lines file, one packet an object (``ts src dst sport dport proto
flags``; other keys such as ``label`` are ignored), as :func:`~fades.testbed.traffic.write_jsonl`
writes it. With ``replay: true`` the capture plays as a live link: its first packet is
shifted to ``start_at`` (epoch seconds; default: when the connector opens) and a fetch sees
only packets whose shifted time has passed. Two nodes given the same ``start_at`` see the
same link, which is what a detector moved between them needs. A persistent task reading it
with ``last_seconds`` equal to its period sees each packet about once (scheduling jitter
can repeat or skip the packets of a few milliseconds at a boundary).

In ``node.yaml``::

    connectors:
      packets: {kind: packets, path: capture.jsonl, replay: true, start_at: 1764400000}
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fades.broker.base import Dataset, DataSummary
from fades.broker.connectors.memory import (
    check_deadline,
    count_columns,
    keys_of,
    select_columns,
    summarise,
    take,
)
from fades.errors import ConnectorError
from fades.task import Selector

#: the most packets one capture file may hold (``max_packets`` in the connector's options)
MAX_PACKETS = 2_000_000
_FIELDS = ("ts", "src", "dst", "sport", "dport", "proto", "flags")


@dataclass(frozen=True, slots=True)
class Packet:
    """One packet as a sensor on the link sees it. ``flags`` are TCP flags in ``FSRPAU``
    order ("" for none; always "" for UDP)."""

    ts: float
    src: str
    dst: str
    sport: int
    dport: int
    proto: str  # "tcp" | "udp"
    flags: str
    label: str = ""


def encode_value(sport: int, dport: int) -> float:
    """How a packet's ports travel in a dataset's ``value`` column: ``dport * 65536 + sport``."""
    return float(dport * 65536 + sport)


def to_dataset(packets: Sequence[Packet]) -> Dataset:
    """Packets as a dataset the node serves like any other (one reading per packet):
    ``ts``; ``value`` = :func:`encode_value`; ``sensor_type`` = ``"tcp:FLAGS"`` or ``"udp:"``;
    ``location`` = source address; ``device`` = destination address. Labels stay out."""
    return Dataset.from_records(
        [p.ts for p in packets],
        [encode_value(p.sport, p.dport) for p in packets],
        [f"{p.proto}:{p.flags}" for p in packets],
        [p.src for p in packets],
        [p.dst for p in packets],
    )


def _bad(path: Path, line: int, why: str) -> ConnectorError:
    return ConnectorError(f"packet capture {path}, line {line}: {why}", connector="packets")


def read_capture(path: Path, max_packets: int = MAX_PACKETS) -> Dataset:
    """The packets of a JSON-lines capture as a dataset, in time order.

    Raises:
        ConnectorError: the file is missing, a line is not a packet (named), or it holds
            more than ``max_packets`` packets.
    """
    packets: list[Packet] = []
    try:
        f = path.open(encoding="utf-8")
    except OSError as exc:
        raise ConnectorError(
            f"cannot read packet capture {path}: {exc.strerror}", connector="packets"
        ) from exc
    with f:
        for n, text in enumerate(f, 1):
            if not text.strip():
                continue
            if len(packets) >= max_packets:
                raise _bad(path, n, f"more than max_packets={max_packets} packets")
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as exc:
                raise _bad(path, n, f"not JSON ({exc.msg})") from exc
            except RecursionError:
                raise _bad(path, n, "JSON nested too deeply for a packet") from None
            if not isinstance(rec, dict):
                raise _bad(path, n, "expected an object with " + ", ".join(_FIELDS))
            missing = [k for k in _FIELDS if k not in rec]
            if missing:
                raise _bad(path, n, f"missing {', '.join(missing)}")
            try:
                sport, dport = int(rec["sport"]), int(rec["dport"])
                ts = float(rec["ts"])
            except (TypeError, ValueError) as exc:
                raise _bad(path, n, f"ts, sport and dport must be numbers ({exc})") from exc
            if not (0 <= sport <= 65535 and 0 <= dport <= 65535):
                raise _bad(path, n, f"ports must be 0..65535, got {sport} and {dport}")
            if rec["proto"] not in ("tcp", "udp"):
                raise _bad(path, n, f"proto must be 'tcp' or 'udp', got {rec['proto']!r}")
            if not isinstance(rec["flags"], str) or set(rec["flags"]) - set("FSRPAU"):
                raise _bad(path, n, f"flags must be letters of FSRPAU, got {rec['flags']!r}")
            packets.append(
                Packet(ts, str(rec["src"]), str(rec["dst"]), sport, dport, rec["proto"],
                       "".join(c for c in "FSRPAU" if c in rec["flags"]), "")
            )  # fmt: skip
    packets.sort(key=lambda p: p.ts)
    return to_dataset(packets)


class PacketConnector:
    """A packet capture (JSON lines), whole or replayed as a live link (see the module)."""

    def __init__(
        self,
        path: str | Path,
        *,
        replay: bool = False,
        start_at: float | None = None,
        max_packets: int = MAX_PACKETS,
    ) -> None:
        if max_packets <= 0:
            raise ValueError(f"max_packets must be > 0, got {max_packets}")
        ds = read_capture(Path(path), max_packets)
        self._shift = 0.0
        if replay and len(ds):
            origin = time.time() if start_at is None else float(start_at)
            self._shift = origin - float(ds.ts[0])
            ds = Dataset(ds.ts + self._shift, ds.value, ds.codes, ds.labels, ds.units)
        self._data = ds
        self._replay = replay

    def _visible(self) -> Dataset:
        if not self._replay:
            return self._data
        n = int(np.searchsorted(self._data.ts, time.time(), side="right"))
        return take(self._data, np.arange(n)) if n < len(self._data) else self._data

    def fetch(
        self, select: Selector, *, deadline: float | None = None, max_rows: int | None = None
    ) -> Dataset:
        check_deadline(deadline)
        out = select_columns(self._visible(), select, max_rows=max_rows)
        check_deadline(deadline)
        return out

    def count_at_most(self, select: Selector, cap: int, *, deadline: float | None = None) -> int:
        check_deadline(deadline)
        return count_columns(self._visible(), select)

    def describe(self) -> list[DataSummary]:
        return summarise(self._visible())

    def sensor_keys(self) -> set[tuple[str, str]]:
        """The (location, sensor type) pairs in the capture."""
        return keys_of(self._data)

    def count(self) -> int:
        return len(self._visible())

    def close(self) -> None:
        """Nothing to release (the capture is held in memory)."""
