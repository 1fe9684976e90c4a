"""A whole fades deployment on one machine: embedded NATS, a controller, N node agents.

``fades up``, the cluster part of ``fades demo``, the cluster benchmarks and the end-to-end
tests all use :class:`LocalCluster`. Every part is a real separate process, talking only over
the NATS fabric: the cluster's own ``nats-server`` (JetStream + MQTT gateway), one
``fades controller start`` and one ``fades node start`` per node. Each node holds its own
rooms of the office testbed, and (optionally) simulated sensors stream more readings for
those rooms over MQTT while it runs.

Folder layout (``home``)::

    keys/            the signing key of this cluster
    nats.token       the token every NATS server of the cluster requires (owner-only)
    nats/hub<i>/     each hub NATS server's config, log and JetStream store
    sites/<site>/    with sites: each site's leaf NATS server (config, log, JetStream store)
    controller/      controller.db, trusted/, artifacts/, tokens.yaml
    nodes/<name>/    one node folder each (trusted/, readings.db, tasks.db, ...)
    logs/            one log per process
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from fades.cluster_sites import SiteParts
from fades.cluster_start import StartRetries, wait_fabric
from fades.errors import ClusterInUse, FadesError
from fades.fabric.hub import EmbeddedHub
from fades.fabric.leaf import HUB_DOMAIN, EmbeddedLeaf
from fades.fabric.server import EmbeddedNats, free_port
from fades.functions.keys import SigningKey

MARKER = ".fades-cluster"
LOCK = ".fades-lock"  # flock()ed by the process running the cluster


def _quiet(_: str) -> None:
    return None


def find_examples(explicit: Path | None = None) -> Path:
    """The examples folder (``functions/`` and ``tasks/``): explicit, ./examples, or the
    one beside the source tree."""
    for cand in (explicit, Path("examples"), Path(__file__).resolve().parents[2] / "examples"):
        if cand is not None and (cand / "functions").is_dir() and (cand / "tasks").is_dir():
            return cand
    raise FadesError("cannot find the examples folder (functions/ and tasks/); pass --examples")


class LocalCluster(SiteParts):
    """Start, use and stop a local cluster.

    Args:
        home: the cluster's folder (made fresh by :meth:`prepare`).
        nodes: number of node agents (named ``edge1``..``edgeN``).
        rooms_per_node: rooms each node holds (edge1: room1..roomK, edge2: the next K, ...).
        days, rate_s: testbed history written into each node before it starts.
        sensors: stream live readings for every node's rooms over MQTT.
        sensor_rate_s: seconds between two readings of one simulated sensor.
        heartbeat_s, down_after_s: node heartbeat period; the controller marks a node down
            after ``down_after_s`` without one.
        capacity: worker threads per node.
        say: called with one line per step (progress for the CLI).
        host, nats_port, http_port: where NATS and the controller listen (loopback and free
            ports by default; a benchmark puts them in a network namespace).
        wrap: turns a command line into one that runs on the "cloud" side (e.g. ``ip netns
            exec``); applied to nats-server and the controller, not to the nodes. With a
            wrap, nats-server is a child process like the others.
        key: the signing key to trust (default: a fresh one).
        node_data: ``node_data(name, folder)`` fills a node's folder with its readings
            (default: the testbed's rooms); returns the number of readings.
        ingest: nodes ingest MQTT sensor readings.
        functions: upload the Python runtime and the example functions at start.
        hub: NATS servers in the hub (1, or 3 for a clustered hub whose streams, buckets
            and object stores keep 3 replicas).
        sites: give every node its own site: a leaf NATS server (its own JetStream domain
            and MQTT gateway) between the node and the hub, reached through an uplink
            that can be cut (:meth:`cut_uplink`) to test offline work.
        controllers: controller processes serving the same API over the same hub.
        devices: declare the simulated shop floor's devices (sensors and actuators) in each
            node folder and simulate the actuators.
        nats_auth: the cluster's NATS servers (hub, routes, sites) require the token kept in
            ``<home>/nats.token`` (made once per folder, owner-only); its processes get it as
            ``FADES_NATS_TOKEN``, its simulators as their MQTT password.
    """

    def __init__(
        self,
        home: str | Path,
        *,
        nodes: int = 3,
        rooms_per_node: int = 2,
        days: float = 0.5,
        rate_s: float = 60.0,
        sensors: bool = True,
        sensor_rate_s: float = 1.0,
        heartbeat_s: float = 1.0,
        down_after_s: float = 5.0,
        capacity: int = 2,
        http_port: int | None = None,
        examples: Path | None = None,
        say: Callable[[str], None] = _quiet,
        host: str = "127.0.0.1",
        nats_port: int | None = None,
        wrap: Callable[[list[str]], list[str]] | None = None,
        key: SigningKey | None = None,
        node_data: Callable[[str, Path], int] | None = None,
        ingest: bool = True,
        functions: bool = True,
        hub: int = 1,
        sites: bool = False,
        controllers: int = 1,
        devices: bool = False,
        nats_auth: bool = True,
    ) -> None:
        if nodes < 1:
            raise FadesError("a cluster needs at least one node")
        if hub not in (1, 3, 5):
            raise FadesError(f"a hub has 1, 3 or 5 NATS servers, not {hub}")
        if controllers < 1:
            raise FadesError("a cluster needs at least one controller")
        self.hub_size = hub
        self.use_sites = sites
        self.n_controllers = controllers
        self.devices = devices
        self.nats_auth = nats_auth
        self.home = Path(home).expanduser().resolve()
        self.n_nodes = nodes
        self.rooms_per_node = rooms_per_node
        self.days = days
        self.rate_s = rate_s
        self.sensors = sensors
        self.sensor_rate_s = sensor_rate_s
        self.heartbeat_s = heartbeat_s
        self.down_after_s = down_after_s
        self.capacity = capacity
        self.host = host
        self.http_port = http_port or free_port(host)
        #: each controller's HTTP port (the first is ``http_port``)
        self.http_ports = [self.http_port] + [free_port(host) for _ in range(controllers - 1)]
        self.examples = examples
        self.say = say
        self.names = [f"edge{i + 1}" for i in range(nodes)]
        self.token = ""
        self.visitor_token = ""
        self.wrap = wrap
        self.node_data = node_data
        self.ingest = ingest
        self.functions = functions
        if hub > 1 and wrap is not None:
            raise FadesError("a wrapped cluster (a network namespace) runs a one-server hub")
        #: the hub's NATS servers (``hub1``..``hubN``, in ``nats/hub<i>/``)
        self.hub = EmbeddedHub(
            self.home / "nats",
            n=hub,
            host=host,
            port=nats_port,
            mqtt=sensors or ingest or devices,
            # a wrapped hub runs in a network namespace: no port of its host can be picked
            # from here, and it serves no sites and no health checks
            leafnodes=wrap is None,
            monitor=wrap is None,
        )
        #: hub server 1 (what callers written for a one-server hub use)
        self.nats: EmbeddedNats = self.hub.servers[0]
        #: site name -> its leaf server (with sites=True; one site per node, named after it)
        self.sites: dict[str, EmbeddedLeaf] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock_fd: int | None = None
        self.simulators: list[Any] = []
        #: node -> its DeviceSimulator (devices=True)
        self.device_sims: dict[str, Any] = {}
        self.artifacts: dict[str, str] = {}
        self.key: SigningKey | None = key
        #: while start() runs: starts a node or controller that exits once more
        self._start_retries: StartRetries | None = None

    # --- layout -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The first controller's URL."""
        return self.urls[0]

    @property
    def urls(self) -> list[str]:
        """Every controller's URL (``controller1`` first)."""
        return [f"http://{self.host}:{port}" for port in self.http_ports]

    @property
    def controller_home(self) -> Path:
        return self.home / "controller"

    def controller_home_of(self, i: int) -> Path:
        """Controller ``i``'s folder (1: ``controller/``; others ``controller<i>/``, with the
        first one's trusted keys and tokens)."""
        return self.controller_home if i == 1 else self.home / f"controller{i}"

    def node_home(self, name: str) -> Path:
        return self.home / "nodes" / name

    def rooms(self, name: str) -> list[str]:
        i = self.names.index(name)
        first = i * self.rooms_per_node + 1
        return [f"room{first + k}" for k in range(self.rooms_per_node)]

    def client(self, token: str | None = None) -> Any:
        from fades.client import FadesClient

        return FadesClient(self.urls, token or self.token)

    # --- prepare ------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Make the folder: key, controller and node folders, each node's testbed rooms."""
        from fades.broker import SQLiteConnector
        from fades.functions.keys import install_trusted
        from fades.testbed import populate

        if self.home.exists():
            if not (self.home / MARKER).exists():
                raise FadesError(f"{self.home} exists and was not made by fades; choose another")
            self._lock()  # refuses while another cluster runs from this folder
            shutil.rmtree(self.home)
            self._unlock()
        self.home.mkdir(parents=True)
        (self.home / MARKER).write_text("made by fades (a local cluster); safe to delete\n")
        self._lock()
        (self.home / "logs").mkdir()
        key = self.key or SigningKey.generate("cluster")
        _, pub = key.save(self.home / "keys")
        self.key = key
        install_trusted(self.controller_home / "trusted", pub)
        self.token = secrets.token_urlsafe(16)
        self.visitor_token = secrets.token_urlsafe(16)
        tokens = {"tokens": {self.token: "facilities", self.visitor_token: "visitor"}}
        (self.controller_home / "tokens.yaml").write_text(yaml.safe_dump(tokens))
        start = datetime.now(UTC) - timedelta(days=self.days)
        for i, name in enumerate(self.names):
            home = self.node_home(name)
            install_trusted(home / "trusted", pub)
            (home / "node.yaml").write_text(yaml.safe_dump({"capacity": self.capacity}))
            (home / "policy.yaml").write_text(
                yaml.safe_dump(
                    {
                        "tenants": {
                            "facilities": {"locations": "*", "sensor_types": "*"},
                            "visitor": {"locations": "*", "sensor_types": ["temperature"]},
                        }
                    }
                )
            )
            if self.devices:
                self.write_devices(name)
            if self.node_data is not None:
                rows = self.node_data(name, home)
                self.say(f"{name}: {rows:,} readings")
                continue
            store = SQLiteConnector(home / "readings.db")
            rows = populate(
                store,
                self.days,
                self.rate_s,
                seed=i + 1,
                start=start,
                rooms=self.rooms_per_node,
                first_room=i * self.rooms_per_node + 1,
            )
            store.close()
            self.say(f"{name}: {', '.join(self.rooms(name))} with {rows:,} readings")

    def write_devices(self, name: str) -> None:
        """The simulated shop floor's ``devices.yaml`` in ``name``'s folder (the facilities
        tenant may command every actuator)."""
        from fades.devices.floor import shop_floor
        from fades.sensors.units import SENSOR_TYPES

        floor = shop_floor(self.rooms(name), list(SENSOR_TYPES), ["facilities"])
        (self.node_home(name) / "devices.yaml").write_text(yaml.safe_dump(floor, sort_keys=False))

    def start_devices(self) -> None:
        """A device simulator per node, serving the actuators its folder declares."""
        from fades.devices.simulate import DeviceSimulator
        from fades.devices.spec import load_devices

        assert self.nats.mqtt_port is not None  # the hub's; a node at a site uses its own
        for i, name in enumerate(self.names):
            declared = load_devices(self.node_home(name), name)
            port = self.sites[name].mqtt_port if name in self.sites else self.nats.mqtt_port
            assert port is not None
            sim = DeviceSimulator(
                "127.0.0.1", port, name, declared, seed=i + 1, password=self.nats_token
            )
            self.device_sims[name] = sim.start()

    def _secret(self, name: str) -> str:
        """``<home>/<name>``: a random secret made once per folder, readable by its owner only."""
        path = self.home / name
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(24))
        return path.read_text().strip()

    def _state_key(self) -> str:
        """The cluster's checkpoint key (``<home>/state.key``)."""
        return self._secret("state.key")

    @property
    def nats_token(self) -> str | None:
        """The token the cluster's NATS servers require (None: ``nats_auth=False``)."""
        return self.hub.token

    # --- processes ----------------------------------------------------------------------------
    def _spawn(
        self,
        label: str,
        args: list[str],
        *,
        cloud: bool = False,
        exe: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``fades ARGS`` (or ``exe + args``), wrapped when it runs on the cloud side."""
        log = (self.home / "logs" / f"{label}.log").open("ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(extra_env or {}))
        # one state key for the whole cluster, so stateful tasks can move between its nodes
        env.setdefault("FADES_STATE_KEY", self._state_key())
        # as many copies of each stream, bucket and object store as the hub can keep
        env["FADES_NATS_REPLICAS"] = str(self.hub.replicas)
        if self.hub.token:  # in the environment, not on the command line (ps shows that)
            env["FADES_NATS_TOKEN"] = self.hub.token
        cmd = [*(exe if exe is not None else [sys.executable, "-m", "fades"]), *args]
        if cloud and self.wrap is not None:
            cmd = self.wrap(cmd)
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop them in order
        )
        log.close()
        self.procs[label] = proc
        return proc

    def start_controller(self, i: int = 1) -> None:
        """Start controller ``i`` (label ``controller<i>``) on its own HTTP port. With several
        controllers each keeps its own ``controller.db``, a replica of the controller log
        (``FADES_CTL_LOG=on``; see :mod:`fades.controller.replica`)."""
        if not 1 <= i <= self.n_controllers:
            raise ValueError(f"controller {i}: this cluster has 1..{self.n_controllers}")
        home = self.controller_home_of(i)
        if i > 1 and not (home / "tokens.yaml").exists():
            shutil.copytree(self.controller_home / "trusted", home / "trusted", dirs_exist_ok=True)
            shutil.copy2(self.controller_home / "tokens.yaml", home / "tokens.yaml")
        hub = getattr(self, "hub", None)
        env: dict[str, str] = {}
        if self.n_controllers > 1:
            env["FADES_CTL_LOG"] = "on"
        if hub is not None:
            env["FADES_NATS_REPLICAS"] = str(min(self.hub_size, 3))
        self._spawn(
            f"controller{i}",
            [
                "controller", "start",
                "--nats", hub.address if hub is not None else self.nats.address,
                "--home", str(home),
                "--http", f"{self.host}:{self.http_ports[i - 1]}",
                "--tokens", str(home / "tokens.yaml"),
                "--down-after", str(self.down_after_s),
            ],
            cloud=True,
            extra_env=env,
        )  # fmt: skip

    def start_node(self, name: str) -> None:
        leaf = self.sites.get(name)
        env = {"FADES_SITE": name, "FADES_NATS_DOMAIN": HUB_DOMAIN} if leaf else {}
        self._spawn(
            name,
            [
                "node", "start", "--name", name,
                "--nats", leaf.server.address if leaf else self.hub.address,
                "--data", str(self.node_home(name)), "--heartbeat", str(self.heartbeat_s),
                "--label", f"rooms={'+'.join(self.rooms(name))}",
                *([] if self.ingest else ["--no-ingest"]),
            ],
            extra_env=env,
        )  # fmt: skip

    def start_nats(self) -> None:
        """The hub's nats-server(s): embedded (waiting until JetStream is ready), or one
        wrapped child process on the cloud side."""
        if self.wrap is None:
            self.hub.start()
            return
        from fades.fabric.server import nats_server_binary, wait_port, write_config

        self.nats.store_dir.mkdir(parents=True, exist_ok=True)
        conf = self.nats.store_dir / "nats-server.conf"
        write_config(conf, self.nats.config_text())
        self._spawn("nats", ["-c", str(conf)], cloud=True, exe=[nats_server_binary()])
        if not wait_port(self.host, self.nats.port, timeout=20):
            self._check_alive()
            raise FadesError(f"nats-server did not open {self.nats.address} within 20 s")

    def stop_nats(self) -> None:
        if self.wrap is None:
            self.hub.stop()
        else:
            self.stop_process("nats")

    def stop_process(self, label: str, *, kill: bool = False, timeout: float = 15.0) -> None:
        """Stop one process by its label (``controller`` is ``controller1``)."""
        if label == "controller":
            label = "controller1"
        proc = self.procs.pop(label, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _check_alive(self) -> None:
        if self._start_retries is not None:
            starters: dict[str, Callable[[], None]] = {
                name: functools.partial(self.start_node, name) for name in self.names
            }
            for i in range(1, self.n_controllers + 1):
                starters[f"controller{i}"] = functools.partial(self.start_controller, i)
            self._start_retries.revive(self.procs, starters, self.home / "logs")
        for label, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.home / "logs" / f"{label}.log").read_text(errors="replace")[-1500:]
                raise FadesError(f"{label} exited with {proc.returncode}:\n{tail}")

    def wait_controller(self, timeout: float = 60.0, i: int | None = None) -> None:
        """Block until controller ``i`` (default: every controller) answers."""
        import httpx

        deadline = time.monotonic() + timeout
        for url in self.urls if i is None else [self.urls[i - 1]]:
            while True:
                self._check_alive()
                try:
                    if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() >= deadline:
                    raise FadesError(
                        f"the controller did not answer on {url} within {timeout:.0f} s"
                    )
                time.sleep(0.1)

    def wait_nodes(self, names: list[str] | None = None, timeout: float = 60.0) -> None:
        """Block until the controller lists every node in ``names`` as up."""
        want = set(names or self.names)
        client = self.client()
        deadline = time.monotonic() + timeout
        up: set[str] = set()
        while time.monotonic() < deadline:
            self._check_alive()
            up = {n["name"] for n in client.nodes() if n["up"]}
            if want <= up:
                return
            time.sleep(0.1)
        missing = ", ".join(sorted(want - up))
        raise FadesError(f"node(s) {missing} did not register within {timeout:.0f} s")

    def upload_functions(self) -> dict[str, str]:
        """Build, sign and upload the Python runtime and every example function."""
        from fades.functions.build import build_function, build_runtime

        client = self.client()
        assert self.key is not None, "prepare() the cluster first"
        runtime = build_runtime(key=self.key)
        client.upload(runtime.to_bytes())
        self.artifacts = {"runtime": runtime.digest}
        ex = find_examples(self.examples)
        for src in sorted((ex / "functions").iterdir()):
            if src.suffix in (".py", ".wat", ".wasm"):
                art = build_function(src, key=self.key)
                client.upload(art.to_bytes())
                self.artifacts[art.name] = art.digest
        return self.artifacts

    def start_sensors(self) -> None:
        from fades.sensors.simulator import SensorSimulator

        for i, name in enumerate(self.names):
            # at a site, sensors publish to the site's own MQTT gateway
            port = self.sites[name].mqtt_port if name in self.sites else self.nats.mqtt_port
            assert port is not None
            sim = SensorSimulator(
                "127.0.0.1",
                port,
                name,
                rooms=self.rooms_per_node,
                first_room=i * self.rooms_per_node + 1,
                rate_s=self.sensor_rate_s,
                seed=i + 1,
                floor=dev.floor if (dev := self.device_sims.get(name)) is not None else None,
                password=self.nats_token,
            )
            sim.start()
            self.simulators.append(sim)

    def _lock(self) -> None:
        """Hold an exclusive lock on the folder for as long as this cluster may run from it.

        A second ``fades up`` (or demo) on the same folder would otherwise delete the
        running cluster's databases, keys and tokens from under it.
        """
        if self._lock_fd is not None:
            return
        path = self.home / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ClusterInUse(
                f"{self.home} is in use by a running cluster (pid {holder}); stop it "
                "(Ctrl-C) or choose another folder with --home"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        self._stop_leftovers()

    def _stop_leftovers(self) -> None:
        """Stop what a killed ``fades up`` left running in this folder (we hold its lock, so
        no live cluster owns them)."""
        from fades.leftovers import find_leftovers, stop_leftovers

        found = find_leftovers(self.home)
        if not found:
            return
        pids = [pid for pid, _ in found]
        self.say(
            f"stopping {len(pids)} processes an earlier cluster left running in {self.home} "
            f"(its fades up was killed): pids {' '.join(map(str, pids))}"
        )
        stuck = stop_leftovers(pids)
        if stuck:
            raise FadesError(
                f"processes left by an earlier cluster in {self.home} cannot be stopped by us "
                f"(pids {' '.join(map(str, stuck))}); stop them, or choose another --home"
            )

    def _unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    def start(self) -> LocalCluster:
        """Start NATS, the controller and the nodes; upload the functions; start sensors."""
        if not (self.home / MARKER).exists():
            self.prepare()
        self._lock()
        if self.key is None:
            self.key = SigningKey.load(next((self.home / "keys").glob("*.key")))
            tokens = yaml.safe_load((self.controller_home / "tokens.yaml").read_text())
            by_tenant = {v: k for k, v in tokens["tokens"].items()}
            self.token, self.visitor_token = by_tenant["facilities"], by_tenant["visitor"]
        if self.nats_auth:
            self.hub.token = self._secret("nats.token")
        try:
            self.start_nats()
            for s in self.hub.servers:
                mqtt = f", MQTT {self.host}:{s.mqtt_port}" if s.mqtt_port else ""
                auth = ", token in nats.token" if s.token else ""
                self.say(f"NATS {s.name} {s.address} (JetStream{auth}){mqtt}")
            if self.hub_size > 1:
                self.say(
                    f"hub: {self.hub_size} servers, {self.hub.replicas} copies of every stream"
                )
            if self.wrap is None:  # the shared streams and repository exist before anyone starts
                wait_fabric(self.hub.url, self.hub.replicas, self.say)
            self._start_retries = StartRetries(self.say)
            try:
                self._start_parts()
            finally:
                self._start_retries = None
        except BaseException:  # a start that fails (or is interrupted) leaves nothing running
            with contextlib.suppress(Exception):
                self.stop()
            raise
        return self

    def _start_parts(self) -> None:
        """start(), once the hub is ready: controllers, sites, nodes, functions, sensors."""
        for i in range(1, self.n_controllers + 1):
            self.start_controller(i)
        self.wait_controller()
        for i, url in enumerate(self.urls, 1):
            label = "controller" if self.n_controllers == 1 else f"controller{i}"
            self.say(f"{label} {url} (OpenAPI docs at {url}/docs)")
        if self.use_sites:
            self.start_sites()
            for leaf in self.sites.values():
                self.say(
                    f"site {leaf.site}: leaf NATS {leaf.server.address} "
                    f"(JetStream domain {leaf.domain}), "
                    f"MQTT {self.host}:{leaf.mqtt_port}, uplink via {leaf.uplink.address}"
                )
        for name in self.names:
            self.start_node(name)
        self.wait_nodes()
        self.say(f"nodes up: {', '.join(self.names)}")
        if self.functions:
            self.upload_functions()
            self.say(f"uploaded the Python runtime and {len(self.artifacts) - 1} functions")
        if self.devices:
            self.start_devices()
            self.say("shop floor: a fan, a conveyor and a warning light per room, simulated")
        if self.sensors:
            self.start_sensors()
            self.say(f"sensors streaming over MQTT every {self.sensor_rate_s:g} s")

    def stop(self) -> None:
        """Stop sensors, nodes, controller and NATS, in that order."""
        for sim in self.simulators:
            sim.stop()
        self.simulators.clear()
        for dsim in self.device_sims.values():
            dsim.stop()
        self.device_sims.clear()
        for name in [n for n in self.names if n in self.procs]:
            self.stop_process(name)
        for i in range(1, self.n_controllers + 1):
            self.stop_process(f"controller{i}")
        for label in [p for p in self.procs if p != "nats"]:
            self.stop_process(label)
        self.stop_sites()
        self.stop_nats()
        self._unlock()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
