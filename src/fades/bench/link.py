"""A really capped edge <-> cloud link: a network namespace, a veth pair and ``tc tbf``.

The root namespace plays the edge; a fresh network namespace plays the cloud. A veth pair
joins them (edge end ``10.213.x.1/30`` in the root namespace, cloud end ``10.213.x.2/30``
in the namespace) and a token bucket filter (``tbf``) on each end's egress caps one
direction: the edge end's egress is the uplink (edge -> cloud, default 0.574 Mbit/s), the
cloud end's egress is the downlink (cloud -> edge, default 45.38 Mbit/s), the effective
broadband rates of the FADES paper's remote data experiment. There is no added delay (netem
is not available everywhere); queueing in the token bucket is the only latency.

``CappedLink`` is a context manager that creates all of it and always removes it again,
including after errors; names and the /30 are unique so that parallel runs do not collide.
It needs root and the ``ip`` and ``tc`` tools; :meth:`CappedLink.check` says why it cannot
run instead of failing half-way.

    with CappedLink("fades-bench") as link:
        subprocess.run(link.ns_cmd(["nats-server", ...]))   # runs in the cloud namespace
        link.measure("up", 100_000)                          # Mbit/s through the cap
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from fades.errors import FabricError

UP_MBIT = 0.574
DOWN_MBIT = 45.38
#: Addresses come from this range, one /30 per link.
SUBNET = ipaddress.IPv4Network("10.213.0.0/16")
#: Queueing allowed in each token bucket before packets are dropped.
TBF_LATENCY_MS = 100
_LOCK = Path(tempfile.gettempdir()) / "fades-capped-link.lock"

Direction = Literal["up", "down"]

# Runs inside the namespace: accept one connection, then receive everything the client sends
# (answering with the byte count) or send ``n`` bytes. Prints "ready <port>" once listening.
_PEER = """
import socket, sys
host, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
srv = socket.socket()
srv.bind((host, 0))
srv.listen(1)
srv.settimeout(120)
print("ready", srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
conn.settimeout(600)
if mode == "up":
    got = 0
    while True:
        b = conn.recv(1 << 16)
        if not b:
            break
        got += len(b)
    conn.sendall(str(got).encode())
else:
    chunk = b"x" * (1 << 16)
    left = n
    while left > 0:
        left -= conn.send(chunk[: min(left, len(chunk))])
    conn.shutdown(socket.SHUT_WR)
    conn.recv(1)
conn.close()
"""


def _run(cmd: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"
        raise FabricError(f"`{' '.join(cmd)}` failed: {msg}")
    return proc


def _burst_bytes(mbit: float) -> int:
    """Bucket size: 4 ms at the rate, at least two full Ethernet frames."""
    return max(2 * 1514, int(mbit * 1e6 / 8 * 0.004))


def _parse_tc(text: str) -> dict[str, int]:
    m = re.search(r"Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+)", text)
    if not m:
        return {}
    sent, pkts, dropped, over = (int(g) for g in m.groups())
    return {"sent_bytes": sent, "packets": pkts, "dropped": dropped, "overlimits": over}


class CappedLink:
    """A cloud network namespace joined to the root namespace by a rate-capped veth pair.

    Args:
        name_prefix: start of the namespace's name (a unique suffix is added).
        up_mbit: edge -> cloud cap (egress of the edge end), Mbit/s.
        down_mbit: cloud -> edge cap (egress of the cloud end), Mbit/s.

    Attributes (valid inside the ``with`` block): ``netns``, ``edge_if``, ``cloud_if``,
    ``edge_ip``, ``cloud_ip``.
    """

    def __init__(
        self, name_prefix: str = "fades", up_mbit: float = UP_MBIT, down_mbit: float = DOWN_MBIT
    ) -> None:
        if up_mbit <= 0 or down_mbit <= 0:
            raise ValueError("link rates must be positive")
        tag = secrets.token_hex(4)
        prefix = re.sub(r"[^A-Za-z0-9_.-]", "-", name_prefix)[:32] or "fades"
        self.up_mbit = up_mbit
        self.down_mbit = down_mbit
        self.netns = f"{prefix}-{os.getpid()}-{tag}"
        self.edge_if = f"fe{tag}"  # interface names: at most 15 characters
        self.cloud_if = f"fc{tag}"
        self.edge_ip = ""
        self.cloud_ip = ""
        self.active = False

    # --- capability ----------------------------------------------------------------------
    @staticmethod
    def check() -> str | None:
        """``None`` when a capped link can be built here, else the reason it cannot."""
        if not sys.platform.startswith("linux"):
            return f"network namespaces need Linux (this is {sys.platform})"
        if os.geteuid() != 0:
            return "needs root to create network namespaces, veth pairs and tc qdiscs"
        for tool in ("ip", "tc"):
            if shutil.which(tool) is None:
                return f"the '{tool}' command (iproute2) is not installed"
        return None

    # --- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> CappedLink:
        reason = self.check()
        if reason is not None:
            raise FabricError(f"cannot build a capped link: {reason}")
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _create(self) -> None:
        self.active = True
        _run(["ip", "netns", "add", self.netns])
        # address choice and assignment under a lock: two runs never take the same /30
        with _locked():
            net = _free_subnet()
            edge, cloud = (str(h) for h in net.hosts())
            _run(["ip", "link", "add", self.edge_if, "type", "veth", "peer", "name", self.cloud_if])
            _run(["ip", "link", "set", self.cloud_if, "netns", self.netns])
            _run(["ip", "addr", "add", f"{edge}/30", "dev", self.edge_if])
        self.edge_ip, self.cloud_ip = edge, cloud
        _run(["ip", "link", "set", self.edge_if, "up"])
        ns = ["ip", "netns", "exec", self.netns]
        _run([*ns, "ip", "addr", "add", f"{cloud}/30", "dev", self.cloud_if])
        _run([*ns, "ip", "link", "set", self.cloud_if, "up"])
        _run([*ns, "ip", "link", "set", "lo", "up"])
        _run(self._tbf_cmd(self.edge_if, self.up_mbit))
        _run([*ns, *self._tbf_cmd(self.cloud_if, self.down_mbit)])

    @staticmethod
    def _tbf_cmd(dev: str, mbit: float) -> list[str]:
        return [
            "tc", "qdisc", "add", "dev", dev, "root", "tbf",
            "rate", f"{mbit * 1000:.3f}kbit",
            "burst", str(_burst_bytes(mbit)),
            "latency", f"{TBF_LATENCY_MS}ms",
        ]  # fmt: skip

    def close(self) -> None:
        """Kill what still runs in the namespace, delete it and the veth pair. Idempotent."""
        if not self.active:
            return
        self.active = False
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        _run(["ip", "netns", "del", self.netns], check=False)
        _run(["ip", "link", "del", self.edge_if], check=False)  # gone with the namespace

    def exists(self) -> dict[str, bool]:
        """Whether the namespace and the edge end of the veth pair exist (for cleanup checks)."""
        names = _run(["ip", "netns", "list"], check=False).stdout.split()
        link = _run(["ip", "link", "show", self.edge_if], check=False).returncode == 0
        return {"netns": self.netns in names, "veth": link}

    def pids(self) -> list[int]:
        """Processes running in the namespace (all of them started through this link)."""
        proc = _run(["ip", "netns", "pids", self.netns], check=False)
        return [int(p) for p in proc.stdout.split() if p.isdigit()] if proc.returncode == 0 else []

    # --- use -----------------------------------------------------------------------------
    def ns_cmd(self, cmd: list[str]) -> list[str]:
        """``cmd`` wrapped to run in the cloud namespace."""
        return ["ip", "netns", "exec", self.netns, *cmd]

    def stats(self) -> dict[str, dict[str, int]]:
        """Token bucket counters: bytes sent, packets, drops, per direction."""
        up = _run(["tc", "-s", "qdisc", "show", "dev", self.edge_if], check=False).stdout
        down = _run(self.ns_cmd(["tc", "-s", "qdisc", "show", "dev", self.cloud_if]), check=False)
        return {"up": _parse_tc(up), "down": _parse_tc(down.stdout)}

    def describe(self) -> dict[str, Any]:
        return {
            "netns": self.netns,
            "edge_if": self.edge_if,
            "cloud_if": self.cloud_if,
            "edge_ip": self.edge_ip,
            "cloud_ip": self.cloud_ip,
            "up_mbit": self.up_mbit,
            "down_mbit": self.down_mbit,
            "tbf": {
                "up": {"burst_bytes": _burst_bytes(self.up_mbit), "latency_ms": TBF_LATENCY_MS},
                "down": {
                    "burst_bytes": _burst_bytes(self.down_mbit),
                    "latency_ms": TBF_LATENCY_MS,
                },
            },
        }

    def measure(self, direction: Direction, nbytes: int, timeout: float = 300.0) -> float:
        """Goodput in Mbit/s of one TCP transfer of ``nbytes`` across the link.

        ``up`` sends from the root namespace to a peer in the cloud namespace, which answers
        with the byte count once the sender has closed; ``down`` receives from the peer. The
        clock runs from connect to the last byte (up: to the peer's answer).
        """
        return measure_tcp(self.ns_cmd, self.cloud_ip, direction, nbytes, timeout)


def measure_tcp(
    wrap: Callable[[list[str]], list[str]],
    host: str,
    direction: Direction,
    nbytes: int,
    timeout: float = 300.0,
) -> float:
    """One TCP transfer to/from a peer started with ``wrap([python, ...])`` listening on
    ``host``; returns Mbit/s. ``wrap`` is ``CappedLink.ns_cmd`` or ``lambda c: c`` for
    loopback."""
    cmd = wrap([sys.executable, "-c", _PEER, host, direction, str(nbytes)])
    peer = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert peer.stdout is not None
        line = peer.stdout.readline().split()
        if len(line) != 2 or line[0] != "ready":
            err = peer.stderr.read() if peer.stderr else ""
            raise FabricError(f"link probe peer did not start: {err.strip()[-300:]}")
        port = int(line[1])
        t0 = time.perf_counter()
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            if direction == "up":
                chunk = b"y" * (1 << 16)
                left = nbytes
                while left > 0:
                    left -= s.send(chunk[: min(left, len(chunk))])
                s.shutdown(socket.SHUT_WR)
                answer = s.recv(64)
                elapsed = time.perf_counter() - t0
                if int(answer or b"0") != nbytes:
                    raise FabricError(f"link probe: peer got {answer!r} of {nbytes} bytes")
            else:
                got = 0
                while got < nbytes:
                    b = s.recv(1 << 16)
                    if not b:
                        break
                    got += len(b)
                elapsed = time.perf_counter() - t0
                s.sendall(b"k")
                if got != nbytes:
                    raise FabricError(f"link probe: received {got} of {nbytes} bytes")
        peer.wait(timeout=10)
        return nbytes * 8 / elapsed / 1e6
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.wait()
        for f in (peer.stdout, peer.stderr):
            if f is not None:
                f.close()


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    with open(_LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _free_subnet() -> ipaddress.IPv4Network:
    """The first /30 of :data:`SUBNET` that no interface of the root namespace overlaps."""
    out = _run(["ip", "-o", "-4", "addr", "show"]).stdout
    used = [
        ipaddress.IPv4Interface(m).network
        for m in re.findall(r"inet (\d+\.\d+\.\d+\.\d+/\d+)", out)
    ]
    for net in SUBNET.subnets(new_prefix=30):
        if not any(net.overlaps(u) for u in used):
            return net
    raise FabricError(f"no free /30 left in {SUBNET} for a capped link")
