"""The hub: one NATS server, or a cluster of 3 or 5 whose JetStream keeps replicated copies.

:class:`EmbeddedHub` starts ``n`` :class:`~fades.fabric.server.EmbeddedNats` servers named
``hub1``..``hubN`` on free loopback ports, each routing to all the others (cluster
``fades-hub``), all in the JetStream domain ``hub``, each with its own MQTT gateway and a
leaf-node listener for edge sites. Streams, buckets and object stores created with
``replicas=3`` (``FADES_NATS_REPLICAS``) then survive the loss of any one server.

:meth:`EmbeddedHub.start` returns once JetStream is usable: the servers elected a meta
leader and every running server reports itself healthy (its ``/healthz`` monitoring
endpoint, which waits for JetStream to be current). :meth:`kill` is a crash (SIGKILL);
:meth:`start_server` brings a server back on the same ports and store, and waits until it
has caught up. ``n=1`` is a single server with the same API.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from fades.errors import FabricError
from fades.fabric.server import AUTO_PORT, EmbeddedNats, check_nats_token, free_port

#: the cluster name of the hub's servers
HUB_CLUSTER = "fades-hub"
#: the hub's JetStream domain (what processes behind a site's leaf server name it)
HUB_DOMAIN = "hub"
#: server counts a hub may have (odd, so a majority survives one or two losses)
HUB_SIZES = (1, 3, 5)


class EmbeddedHub:
    """``n`` NATS servers forming the hub (a cluster when ``n > 1``).

    Args:
        home: the hub's folder; server ``i`` keeps its config, log and store in
            ``home/hub<i>``.
        n: servers (1, 3 or 5).
        host: address every port listens on.
        domain: the JetStream domain of every server.
        mqtt: an MQTT gateway on every server.
        sync_interval: JetStream's fsync policy (see :class:`EmbeddedNats`).
        port: client port of ``hub1`` (free if None; the others always get free ports).
        name: server name of a single-server hub (``hub1`` if None).
        leafnodes: accept leaf-node connections (edge sites) on every server.
        monitor: serve nats-server's monitoring endpoints (``/healthz``, ``/jsz``) on a
            free loopback port; readiness checks use them.
        token: the token every server requires of clients, sites and peers (None: none); may
            be set later through :attr:`token`, before :meth:`start`.
    """

    def __init__(
        self,
        home: str | Path,
        *,
        n: int = 1,
        host: str = "127.0.0.1",
        domain: str = HUB_DOMAIN,
        mqtt: bool = True,
        sync_interval: str | None = "always",
        port: int | None = None,
        name: str | None = None,
        leafnodes: bool = True,
        max_payload: int = 1024 * 1024,
        monitor: bool = True,
        token: str | None = None,
    ) -> None:
        if n not in HUB_SIZES:
            raise ValueError(f"a hub has 1, 3 or 5 NATS servers, not {n}")
        self.home = Path(home).expanduser().resolve()
        self.n = n
        self.host = host
        self.domain = domain
        route_ports = [free_port(host) for _ in range(n)] if n > 1 else []
        self.servers: list[EmbeddedNats] = []
        for i in range(n):
            routes = [f"nats-route://{host}:{p}" for j, p in enumerate(route_ports) if j != i]
            self.servers.append(
                EmbeddedNats(
                    self.home / f"hub{i + 1}",
                    port=port if i == 0 and port else None,
                    mqtt=mqtt,
                    host=host,
                    name=name if n == 1 and name else f"hub{i + 1}",
                    domain=domain,
                    max_payload=max_payload,
                    sync_interval=sync_interval,
                    cluster_name=HUB_CLUSTER if n > 1 else None,
                    cluster_port=route_ports[i] if n > 1 else None,
                    routes=routes,
                    leaf_port=AUTO_PORT if leafnodes else None,
                    monitor_port=AUTO_PORT if monitor else None,
                    token=token,
                )
            )

    # --- addresses ----------------------------------------------------------------------------
    @property
    def token(self) -> str | None:
        """The token the hub's servers require (None: no authentication)."""
        return self.servers[0].token

    @token.setter
    def token(self, value: str | None) -> None:
        for s in self.servers:
            s.token = check_nats_token(value) if value is not None else None

    @property
    def url(self) -> str:
        """The client URLs of every server, comma-separated, with the token in them when the
        hub requires one."""
        return ",".join(s.url for s in self.servers)

    @property
    def address(self) -> str:
        """The client URLs without credentials (what FADES_NATS_URL takes beside
        FADES_NATS_TOKEN; for messages and command lines)."""
        return ",".join(s.address for s in self.servers)

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    @property
    def leaf_urls(self) -> list[str]:
        """Where an edge site's leaf server connects (one URL per hub server)."""
        return [s.leaf_url for s in self.servers if s.leaf_url]

    @property
    def mqtt_port(self) -> int | None:
        """The MQTT gateway of ``hub1``."""
        return self.servers[0].mqtt_port

    @property
    def replicas(self) -> int:
        """Copies a stream, bucket or object store should keep on this hub (at most 3)."""
        return min(self.n, 3)

    def server(self, i: int) -> EmbeddedNats:
        """Server ``i`` (1-based: ``hub1`` is ``server(1)``)."""
        if not 1 <= i <= self.n:
            raise ValueError(f"the hub has servers 1..{self.n}, not {i}")
        return self.servers[i - 1]

    def index(self, name: str) -> int:
        """The 1-based index of the server called ``name`` (e.g. a stream's leader)."""
        for i, s in enumerate(self.servers, 1):
            if s.name == name:
                return i
        raise ValueError(f"no hub server is called {name!r}")

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> EmbeddedHub:
        """Start every server and wait until JetStream has a meta leader and all are healthy."""
        deadline = time.monotonic() + timeout
        try:
            for s in self.servers:
                s.start(timeout=max(1.0, deadline - time.monotonic()))
            self.wait_ready(max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        return self

    def start_server(self, i: int, timeout: float = 60.0) -> None:
        """Restart server ``i`` on its ports and store; return once it has caught up (see
        :meth:`wait_caught_up`)."""
        deadline = time.monotonic() + timeout
        s = self.server(i)
        s.start(timeout=timeout)
        self.wait_ready(max(1.0, deadline - time.monotonic()))
        self.wait_caught_up(i, max(1.0, deadline - time.monotonic()))

    def stream_seqs(self, i: int, *, leading: bool = False) -> dict[str, tuple[int, set[str]]]:
        """The streams server ``i`` holds a copy of: the last sequence in its own copy and
        the servers holding a copy. ``leading``: only the streams it leads. Empty if it does
        not answer."""
        s = self.server(i)
        got = jsz(s, "?accounts=true&streams=true") or {}
        out: dict[str, tuple[int, set[str]]] = {}
        for account in got.get("account_details") or []:
            for st in account.get("stream_detail") or []:
                cluster = st.get("cluster") or {}
                leader = cluster.get("leader")
                if leading and leader != s.name and self.n > 1:
                    continue
                peers = {s.name, str(leader)} | {
                    str(r["name"]) for r in cluster.get("replicas") or []
                }
                seq = int((st.get("state") or {}).get("last_seq") or 0)
                out[str(st["name"])] = (seq, peers)
        return out

    def wait_caught_up(self, i: int, timeout: float = 60.0) -> None:
        """Block until server ``i`` holds, for every stream it keeps a copy of, everything
        the stream's leader had when this call began (what it missed while it was down).

        Raises:
            FabricError: not within ``timeout`` (naming the streams still behind).
        """
        if self.n == 1:
            return
        me = self.server(i).name
        target: dict[str, int] = {}
        for j in self.running:
            if j != i:
                for name, (seq, peers) in self.stream_seqs(j, leading=True).items():
                    if me in peers:
                        target[name] = seq
        deadline = time.monotonic() + timeout
        behind = sorted(target)
        while time.monotonic() < deadline:
            mine = self.stream_seqs(i)
            behind = [n for n, seq in target.items() if n not in mine or mine[n][0] < seq]
            if not behind:
                return
            time.sleep(0.05)
        raise FabricError(
            f"hub server {me} did not catch up within {timeout:.0f} s "
            f"(behind: {', '.join(sorted(behind)[:5])})"
        )

    def kill(self, i: int) -> None:
        """SIGKILL server ``i`` (a crash)."""
        self.server(i).kill()

    def stop_server(self, i: int) -> None:
        """SIGTERM server ``i`` and wait (a clean shutdown)."""
        self.server(i).stop()

    def stop(self) -> None:
        """Stop every server (SIGTERM, then wait)."""
        for s in self.servers:
            s.stop()

    @property
    def running(self) -> list[int]:
        """1-based indexes of the servers running now."""
        return [i for i, s in enumerate(self.servers, 1) if s.running]

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until a meta leader is elected and every running server is healthy.

        Raises:
            FabricError: not within ``timeout`` (naming what is missing).
        """
        deadline = time.monotonic() + timeout
        missing = "no server is running"
        while time.monotonic() < deadline:
            up = [self.servers[i - 1] for i in self.running]
            if up:
                sick = [s.name for s in up if not _healthy(s)]
                leader = self.meta_leader()
                if not sick and leader:
                    return
                missing = f"not healthy: {', '.join(sick)}" if sick else "no JetStream meta leader"
            time.sleep(0.05)
        raise FabricError(f"the NATS hub was not ready within {timeout:.0f} s ({missing})")

    def meta_leader(self) -> str | None:
        """The server leading JetStream's meta group, once every running server names the
        same one and knows all ``n`` peers (None while an election runs or peers join: a
        leader can be elected by two servers before the third has joined)."""
        if self.n == 1:
            return self.servers[0].name if self.servers[0].running else None
        leaders: set[str] = set()
        for i in self.running:
            mc = (jsz(self.servers[i - 1]) or {}).get("meta_cluster") or {}
            if not mc.get("leader") or int(mc.get("cluster_size") or 0) < self.n:
                return None
            leaders.add(str(mc["leader"]))
        return leaders.pop() if len(leaders) == 1 else None

    def __enter__(self) -> EmbeddedHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedHub(n={self.n}, {self.address})"


def _get(server: EmbeddedNats, path: str) -> tuple[int, bytes] | None:
    if not server.monitor_port:
        return None
    url = f"http://{server.host}:{server.monitor_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=2.0) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), b""
    except (OSError, ValueError):
        return None


def _healthy(server: EmbeddedNats) -> bool:
    got = _get(server, "/healthz")
    return got is not None and got[0] == 200


def jsz(server: EmbeddedNats, query: str = "") -> dict[str, Any] | None:
    """The server's ``/jsz`` monitoring report (None if it does not answer)."""
    got = _get(server, "/jsz" + query)
    if got is None or got[0] != 200:
        return None
    try:
        data = json.loads(got[1])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
