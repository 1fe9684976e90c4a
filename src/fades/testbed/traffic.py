"""Labelled network traffic for the intrusion detector: benign background with attacks mixed in.

Deterministic for a given seed. Every packet carries the label of what produced it:
``"benign"`` or the attack kind (:data:`ATTACK_KINDS`). The replies of a target to an attack
carry the attack's label too. Each attack comes from its own source address, so "was this
attack detected" means "was there an alert of this kind for this source".

Background: ``clients`` hosts open TCP connections to ``servers`` on their services (22, 80,
443: handshake, a request or two, an orderly close), query DNS and NTP over UDP, and now and
then hit a closed port (the server answers with a reset).

Attacks (nmap's probe shapes; the target has 22, 80 and 443 open for TCP, 53 and 123 for UDP):

* ``syn_flood``, ``udp_flood``: ``flood_pps`` packets per second to one service for
  ``flood_s`` seconds;
* ``syn_scan`` (SYN, the target answers SYN-ACK or RST, the scanner resets open ports),
  ``connect_scan`` (a full handshake on open ports, then an RST-ACK), ``null_scan`` (no
  flags), ``fin_scan`` (FIN), ``xmas_scan`` (FIN, PSH, URG), ``udp_scan`` (empty datagrams):
  ``scan_ports`` ports in a shuffled order at ``scan_pps`` probes per second;
* ``slow_scan``: a SYN scan of ``slow_ports`` ports, one probe every ``slow_interval_s``
  seconds (minutes in all).

The node sees packets as an ordinary dataset (:func:`to_dataset`, from the ``packets``
connector): one reading per packet, so the broker, the FDS1 wire format and the sandbox need
nothing new. :func:`write_jsonl` saves a trace as a capture that connector reads.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fades.broker.connectors.packets import Packet, encode_value, to_dataset

BENIGN = "benign"
ATTACK_KINDS = (
    "syn_flood",
    "udp_flood",
    "syn_scan",
    "connect_scan",
    "null_scan",
    "fin_scan",
    "xmas_scan",
    "udp_scan",
    "slow_scan",
)
#: the TCP flags of a probe, per scan kind (``connect_scan`` and ``syn_scan`` send SYN)
PROBE_FLAGS = {"syn_scan": "S", "connect_scan": "S", "null_scan": "", "fin_scan": "F"}
PROBE_FLAGS |= {"xmas_scan": "FPU", "slow_scan": "S"}
OPEN_TCP = (22, 80, 443)
OPEN_UDP = (53, 123)
#: the default start of the trace (epoch seconds, 2023-11-14)
T0 = 1_700_000_000.0


@dataclass(frozen=True, slots=True)
class Attack:
    """One attack in the trace: its kind, source, target and when it runs."""

    kind: str
    src: str
    dst: str
    start: float
    end: float


@dataclass(slots=True)
class Traffic:
    """A generated trace: packets in time order and the attacks mixed in."""

    packets: list[Packet]
    attacks: list[Attack]
    seed: int
    start: float
    duration_s: float
    counts: dict[str, int] = field(default_factory=dict)

    def batches(self, seconds: float) -> Iterator[list[Packet]]:
        """The packets cut into consecutive windows of ``seconds`` (empty windows skipped)."""
        if seconds <= 0:
            raise ValueError(f"batch length must be > 0 s, got {seconds}")
        batch: list[Packet] = []
        edge = self.start + seconds
        for p in self.packets:
            while p.ts >= edge:
                if batch:
                    yield batch
                    batch = []
                edge += seconds
            batch.append(p)
        if batch:
            yield batch


def _flags(s: str) -> str:
    return "".join(f for f in "FSRPAU" if f in s)


class _Gen:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.out: list[Packet] = []

    def sport(self) -> int:
        return self.rng.randint(32768, 60999)

    def tcp(self, ts: float, a: str, b: str, sp: int, dp: int, flags: str, label: str) -> None:
        self.out.append(Packet(round(ts, 6), a, b, sp, dp, "tcp", _flags(flags), label))

    def udp(self, ts: float, a: str, b: str, sp: int, dp: int, label: str) -> None:
        self.out.append(Packet(round(ts, 6), a, b, sp, dp, "udp", "", label))

    def connection(self, t: float, c: str, s: str, port: int) -> None:
        rtt = self.rng.uniform(0.0005, 0.02)
        sp = self.sport()
        if port not in OPEN_TCP:  # a closed port: refused
            self.tcp(t, c, s, sp, port, "S", BENIGN)
            self.tcp(t + rtt, s, c, port, sp, "RA", BENIGN)
            return
        self.tcp(t, c, s, sp, port, "S", BENIGN)
        self.tcp(t + rtt, s, c, port, sp, "SA", BENIGN)
        self.tcp(t + 1.5 * rtt, c, s, sp, port, "A", BENIGN)
        t += 2 * rtt
        for _ in range(self.rng.randint(1, 3)):
            self.tcp(t, c, s, sp, port, "PA", BENIGN)
            self.tcp(t + rtt, s, c, port, sp, "PA", BENIGN)
            t += rtt + self.rng.uniform(0.001, 0.2)
        self.tcp(t, c, s, sp, port, "FA", BENIGN)
        self.tcp(t + rtt, s, c, port, sp, "FA", BENIGN)
        self.tcp(t + 1.5 * rtt, c, s, sp, port, "A", BENIGN)

    def datagram(self, t: float, c: str, s: str, port: int) -> None:
        sp = self.sport()
        self.udp(t, c, s, sp, port, BENIGN)
        self.udp(t + self.rng.uniform(0.0005, 0.02), s, c, port, sp, BENIGN)

    def probe(self, t: float, kind: str, a: str, b: str, port: int, sp: int) -> None:
        rtt = self.rng.uniform(0.0005, 0.005)
        if kind == "udp_scan":
            self.udp(t, a, b, sp, port, kind)
            if port in OPEN_UDP:
                self.udp(t + rtt, b, a, port, sp, kind)
            return
        self.tcp(t, a, b, sp, port, PROBE_FLAGS[kind], kind)
        is_open = port in OPEN_TCP
        if kind in ("syn_scan", "slow_scan", "connect_scan"):
            if not is_open:
                self.tcp(t + rtt, b, a, port, sp, "RA", kind)
            elif kind == "connect_scan":
                self.tcp(t + rtt, b, a, port, sp, "SA", kind)
                self.tcp(t + 1.5 * rtt, a, b, sp, port, "A", kind)
                self.tcp(t + 2 * rtt, a, b, sp, port, "RA", kind)
            else:
                self.tcp(t + rtt, b, a, port, sp, "SA", kind)
                self.tcp(t + 1.5 * rtt, a, b, sp, port, "R", kind)
        elif not is_open:  # NULL, FIN, XMAS: a closed port resets, an open one stays silent
            self.tcp(t + rtt, b, a, port, sp, "RA", kind)


def generate(
    seed: int = 0,
    *,
    duration_s: float = 420.0,
    clients: int = 40,
    servers: int = 4,
    conn_rate: float = 8.0,
    attacks: Sequence[str] = ATTACK_KINDS,
    flood_pps: float = 500.0,
    flood_s: float = 4.0,
    scan_ports: int = 200,
    scan_pps: float = 100.0,
    slow_ports: int = 60,
    slow_interval_s: float = 5.0,
    slow_start_s: float = 30.0,
    start: float = T0,
) -> Traffic:
    """A labelled trace of ``duration_s`` seconds with each of ``attacks`` once.

    Benign connections arrive at ``conn_rate`` per second (TCP 70 %, DNS/NTP 25 %, a closed
    port 5 %). The slow scan starts at ``slow_start_s``; the other attacks are spread over
    the rest of the trace, one at a time, each against a random server.
    """
    unknown = [k for k in attacks if k not in ATTACK_KINDS]
    if unknown:
        raise ValueError(f"unknown attack kind(s) {unknown}; known: {', '.join(ATTACK_KINDS)}")
    slow_len = slow_ports * slow_interval_s
    if "slow_scan" in attacks and slow_start_s + slow_len > duration_s:
        raise ValueError(
            f"duration_s={duration_s:g} is too short for the slow scan "
            f"({slow_ports} probes every {slow_interval_s:g} s from t={slow_start_s:g} s)"
        )
    g = _Gen(seed)
    rng = g.rng
    hosts = [f"10.0.1.{i + 1}" for i in range(clients)]
    servs = [f"10.0.0.{i + 1}" for i in range(servers)]
    t = start
    end = start + duration_s
    while True:
        t += rng.expovariate(conn_rate)
        if t >= end:
            break
        c, s = rng.choice(hosts), rng.choice(servs)
        r = rng.random()
        if r < 0.70:
            g.connection(t, c, s, rng.choice(OPEN_TCP))
        elif r < 0.95:
            g.datagram(t, c, s, rng.choice(OPEN_UDP))
        else:
            g.connection(t, c, s, rng.randint(1, 1024))
    placed: list[Attack] = []
    fast = [k for k in attacks if k != "slow_scan"]
    slot = (duration_s - 20.0) / max(len(fast), 1)
    for i, kind in enumerate(attacks):
        src = f"10.9.0.{i + 1}"
        dst = rng.choice(servs)
        if kind == "slow_scan":
            a0 = start + slow_start_s
            ports = rng.sample(range(1, 1025), slow_ports)
            for j, port in enumerate(ports):
                g.probe(a0 + j * slow_interval_s, kind, src, dst, port, g.sport())
            placed.append(Attack(kind, src, dst, a0, a0 + (slow_ports - 1) * slow_interval_s))
            continue
        a0 = start + 10.0 + fast.index(kind) * slot + rng.uniform(0, slot / 4)
        if kind in ("syn_flood", "udp_flood"):
            port = 80 if kind == "syn_flood" else 53
            n = int(flood_pps * flood_s)
            for j in range(n):
                ts = a0 + j / flood_pps
                if kind == "syn_flood":
                    sp = g.sport()
                    g.tcp(ts, src, dst, sp, port, "S", kind)
                    if j % 4 == 0:  # the target answers some before its backlog fills
                        g.tcp(ts + 0.001, dst, src, port, sp, "SA", kind)
                else:
                    g.udp(ts, src, dst, g.sport(), port, kind)
            placed.append(Attack(kind, src, dst, a0, a0 + (n - 1) / flood_pps))
            continue
        ports = list(range(1, scan_ports + 1))
        rng.shuffle(ports)
        sp = g.sport()
        for j, port in enumerate(ports):
            # connect(2) takes a fresh source port per connection; raw scanners reuse one
            g.probe(
                a0 + j / scan_pps, kind, src, dst, port, g.sport() if kind == "connect_scan" else sp
            )
        placed.append(Attack(kind, src, dst, a0, a0 + (scan_ports - 1) / scan_pps))
    placed = [Attack(a.kind, a.src, a.dst, round(a.start, 6), round(a.end, 6)) for a in placed]
    packets = g.out
    packets.sort(key=lambda p: p.ts)
    counts: dict[str, int] = {}
    for p in packets:
        counts[p.label] = counts.get(p.label, 0) + 1
    return Traffic(packets, placed, seed, start, duration_s, counts)


def write_jsonl(packets: Sequence[Packet], path: str | Path) -> Path:
    """Write ``packets`` as a JSON-lines capture (what the ``packets`` connector reads)."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as f:
        for p in packets:
            f.write(json.dumps(asdict(p), separators=(",", ":")) + "\n")
    return path


def score(traffic: Traffic, alerts: Sequence[dict[str, object]]) -> dict[str, dict[str, float]]:
    """Alerts against the labels, per kind: ``attacks`` (instances in the trace), ``detected``
    (an alert of that kind for the attack's source), ``false_positives`` (alerts of that kind
    that match no such attack) and ``delay_s`` (first matching alert after the attack began).
    """
    out: dict[str, dict[str, float]] = {
        k: {"attacks": 0, "detected": 0, "false_positives": 0, "delay_s": 0.0} for k in ATTACK_KINDS
    }
    truth = {(a.kind, a.src): a for a in traffic.attacks}
    first: dict[tuple[str, str], float] = {}
    for a in alerts:
        key = (str(a["kind"]), str(a["src"]))
        if key[0] not in out:
            raise ValueError(f"an alert of unknown kind {key[0]!r}")
        if key in truth:
            ts = a["ts"]
            assert isinstance(ts, (int, float))
            first[key] = min(first.get(key, float(ts)), float(ts))
        else:
            out[key[0]]["false_positives"] += 1
    for key, attack in truth.items():
        row = out[attack.kind]
        row["attacks"] += 1
        if key in first:
            row["detected"] += 1
            row["delay_s"] += first[key] - attack.start
    for row in out.values():
        if row["detected"]:
            row["delay_s"] /= row["detected"]
    return out


__all__ = [
    "ATTACK_KINDS",
    "BENIGN",
    "T0",
    "Attack",
    "Packet",
    "Traffic",
    "encode_value",
    "generate",
    "score",
    "to_dataset",
    "write_jsonl",
]
