"""A signature-based intrusion detector that keeps per-source state between invocations.

Run it as a persistent, stateful task: each invocation gets the packets seen since the last
one, as the dataset ``packets`` (one reading per packet: ``ts``; ``value`` = destination port
* 65536 + source port; ``sensor_type`` = ``"tcp:FLAGS"`` or ``"udp:"``; ``location`` =
source address; ``device`` = destination address; see ``fades.testbed.traffic``). It returns
the alerts raised by these packets. Its memory of earlier packets lives in module globals,
which fades captures at checkpoints and restores after a move, so a slow scan that started
before the move is still recognised after it.

Rules (thresholds in ``params``, defaults below):

* ``syn_flood``: a source holds ``syn_flood`` half-open connections (a SYN with no ACK or RST
  from it on that connection) to one destination port, younger than ``half_open_s``;
* ``udp_flood``: ``udp_flood`` datagrams from a source to one host within ``flood_s``, on
  few ports (at least 4 datagrams per port);
* ``syn_scan`` / ``connect_scan`` (a scan through connect(2): a new source port per probe,
  or handshakes completed and aborted with an RST-ACK), ``null_scan``, ``fin_scan``,
  ``xmas_scan``, ``udp_scan``: ``scan_ports`` distinct ports of one host probed by one source
  within ``window_s`` (a probe: a SYN without ACK, a packet with no flags, a bare FIN,
  FIN+PSH+URG, a datagram);
* ``slow_scan``: ``slow_scan_ports`` distinct ports probed within ``slow_window_s`` when
  no fast alert fired (a low-and-slow scan only long memory can see).

Each (kind, source, destination) alerts once per ``slow_window_s``. The state is bounded
whatever the traffic: ``max_half_open`` connections and ``max_ports`` ports per source, and
``max_keys`` sources (or source-target pairs) per table, the oldest forgotten first. A flood
from many spoofed sources is therefore not seen by these per-source rules.
"""

DEFAULTS = {
    "window_s": 10.0,
    "slow_window_s": 600.0,
    "scan_ports": 20,
    "slow_scan_ports": 40,
    "syn_flood": 100,
    "half_open_s": 10.0,
    "udp_flood": 300,
    "flood_s": 2.0,
    "max_half_open": 1000,
    "max_ports": 2000,
    "max_keys": 1000,
}
PROBES = {"tcp:S": "syn", "tcp:": "null", "tcp:F": "fin", "tcp:FPU": "xmas", "udp:": "udp"}

# the state: plain data, captured between invocations
half_open = {}  # src -> {"dst:dport:sport": ts of the SYN}
probes = {}  # "kind src dst" -> {dport: ts of the last probe}
aborted = {}  # "src dst" -> ts of the last RST-ACK the source sent
syn_sports = {}  # "src dst" -> [source port of the last SYN, SYNs from a new port]
udp_rate = {}  # "src dst" -> {second: datagrams}
alerted = {}  # "kind src dst" -> ts of the alert
packets_seen = 0


def _alert(out, kind, src, dst, ts, **info):
    key = f"{kind} {src} {dst}"
    if key in alerted:
        return
    alerted[key] = ts
    out.append(dict({"kind": kind, "src": src, "dst": dst, "ts": ts}, **info))


def _expire(now, cfg):
    slow = now - cfg["slow_window_s"]
    for table in (probes,):
        for key in list(table):
            ports = table[key]
            for port in [p for p, t in ports.items() if t < slow]:
                del ports[port]
            if not ports:
                del table[key]
    ho = now - cfg["half_open_s"]
    for src in list(half_open):
        conns = half_open[src]
        for conn in [c for c, t in conns.items() if t < ho]:
            del conns[conn]
        if not conns:
            del half_open[src]
    first = int(now - cfg["flood_s"])
    for key in list(udp_rate):
        per_s = udp_rate[key]
        for sec in [s for s in per_s if s < first]:
            del per_s[sec]
        if not per_s:
            del udp_rate[key]
    for table in (aborted, alerted):
        for key in [k for k, t in table.items() if t < slow]:
            del table[key]
    for key in [k for k in syn_sports if f"syn {k}" not in probes]:
        del syn_sports[key]
    # bound the state whatever the traffic (many spoofed sources): forget the oldest keys
    cap = cfg["max_keys"]
    for table in (half_open, probes, aborted, syn_sports, udp_rate, alerted):
        for key in list(table)[: max(0, len(table) - cap)]:
            del table[key]


def detect(rows, cfg):
    """The rules over ``rows`` (ts, src, dst, sport, dport, kind): the new alerts."""
    global packets_seen
    out = []
    touched = set()
    now = None
    max_ho, max_ports = cfg["max_half_open"], cfg["max_ports"]
    for ts, src, dst, sport, dport, kind in rows:
        now = ts
        probe = PROBES.get(kind)
        if kind == "tcp:S":
            last = syn_sports.get(f"{src} {dst}")
            if last is None:
                syn_sports[f"{src} {dst}"] = [sport, 0]
            elif last[0] != sport:
                last[0] = sport
                last[1] += 1
            conns = half_open.setdefault(src, {})
            if len(conns) >= max_ho:
                del conns[next(iter(conns))]
            conns[f"{dst}:{dport}:{sport}"] = ts
        elif kind.startswith("tcp:") and ("A" in kind or "R" in kind):
            conns = half_open.get(src)
            if conns:
                conns.pop(f"{dst}:{dport}:{sport}", None)
            if kind == "tcp:RA":
                aborted[f"{src} {dst}"] = ts
        if probe is not None:
            key = f"{probe} {src} {dst}"
            ports = probes.get(key)
            if ports is None:
                ports = probes[key] = {}
            if dport in ports or len(ports) < max_ports:
                ports[dport] = ts
            touched.add(key)
            if probe == "udp":
                per_s = udp_rate.setdefault(f"{src} {dst}", {})
                sec = int(ts)
                per_s[sec] = per_s.get(sec, 0) + 1
        elif kind == "tcp:S" or kind == "tcp:RA":
            touched.add(f"syn {src} {dst}")
    packets_seen += len(rows)
    if now is None:
        return out
    _expire(now, cfg)
    for key in sorted(touched):
        probe, src, dst = key.split(" ")
        ports = probes.get(key, {})
        recent = sum(1 for t in ports.values() if t >= now - cfg["window_s"])
        if probe == "udp":
            first = int(now - cfg["flood_s"])
            n = sum(c for s, c in udp_rate.get(f"{src} {dst}", {}).items() if s >= first)
            if n >= cfg["udp_flood"] and n >= 4 * max(recent, 1):
                _alert(out, "udp_flood", src, dst, now, datagrams=n)
                continue
        if recent >= cfg["scan_ports"]:
            name = probe + "_scan"
            if probe == "syn" and (
                f"{src} {dst}" in aborted or 2 * syn_sports[f"{src} {dst}"][1] >= recent
            ):
                name = "connect_scan"  # connect(2): a new source port per probe
            _alert(out, name, src, dst, now, ports=recent)
        elif len(ports) >= cfg["slow_scan_ports"] and not any(
            f"{k} {src} {dst}" in alerted
            for k in ("syn_scan", "connect_scan", "null_scan", "fin_scan", "xmas_scan", "udp_scan")
        ):
            _alert(out, "slow_scan", src, dst, now, ports=len(ports), probe=probe)
    for src, conns in list(half_open.items()):
        if len(conns) < cfg["syn_flood"]:
            continue
        per_target = {}
        for conn in conns:
            target = conn.rsplit(":", 1)[0]
            per_target[target] = per_target.get(target, 0) + 1
        for target, n in per_target.items():
            if n >= cfg["syn_flood"]:
                dst, port = target.split(":")
                _alert(out, "syn_flood", src, dst, now, half_open=n, port=int(port))
    return out


def rows_of(ds):
    """The packets of a dataset as (ts, src, dst, sport, dport, kind) tuples."""
    src_l, dst_l, kind_l = ds.labels["location"], ds.labels["device"], ds.labels["sensor_type"]
    rows = []
    for ts, v, s, d, k in zip(
        ds.ts, ds.values, ds.codes("location"), ds.codes("device"), ds.codes("sensor_type")
    ):
        ports = int(v)
        rows.append((ts, src_l[s], dst_l[d], ports & 0xFFFF, ports >> 16, kind_l[k]))
    return rows


def main(data, params):
    if "packets" not in data:
        raise ValueError(f"the detector reads a dataset named 'packets'; got {sorted(data)}")
    cfg = dict(DEFAULTS, **{k: v for k, v in params.items() if k in DEFAULTS})
    alerts = detect(rows_of(data["packets"]), cfg)
    return {
        "alerts": alerts,
        "packets": len(data["packets"]),
        "packets_seen": packets_seen,
        "tracked": {"half_open": sum(len(c) for c in half_open.values()), "probes": len(probes)},
    }
