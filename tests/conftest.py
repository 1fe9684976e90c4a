"""Shared fixtures: a signing key, the signed Python runtime, and node folders in tmp_path.

The Python runtime is built (componentize-py) and compiled once and cached in FADES_CACHE
(default ``~/.cache/fades``); tests never point FADES_CACHE at a per-test folder, or every test
would rebuild it.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fades.functions.artifact import Artifact
from fades.functions.keys import SigningKey

# A suite started as a background job without job control (``cmd &`` in a script) inherits an
# ignored SIGINT, and so would every process a test starts: the tests that press Ctrl-C on a
# child (``fades up``, ``sensors simulate``, a one-shot ``task run``) would wait forever. Tests
# run as from a terminal, where Ctrl-C interrupts: the children start with SIGINT at default.
signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

#: Small testbed written once per session and copied into every node: 0.1 day at 60 s.
TESTBED_DAYS, TESTBED_RATE_S, TESTBED_SEED = 0.1, 60.0, 1


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    """The key every test node trusts."""
    return SigningKey.generate("test-signing")


@pytest.fixture(scope="session")
def runtime_artifact(signing_key: SigningKey) -> Artifact:
    """The signed Python runtime (built and compiled once, cached in FADES_CACHE)."""
    from fades.functions.build import build_runtime

    return build_runtime(key=signing_key)


@pytest.fixture(scope="session")
def testbed_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small office testbed (5 rooms, every sensor type) in one SQLite file, made once."""
    from datetime import UTC, datetime, timedelta

    from fades.broker import SQLiteConnector
    from fades.testbed import populate

    path = tmp_path_factory.mktemp("testbed") / "readings.db"
    store = SQLiteConnector(path)
    # end "now" so that relative windows (last_seconds) select data
    start = datetime.now(UTC) - timedelta(days=TESTBED_DAYS)
    populate(store, TESTBED_DAYS, TESTBED_RATE_S, TESTBED_SEED, start=start)
    store.close()
    return path


def write_source(directory: Path, name: str, source: str, suffix: str = ".py") -> Path:
    """Write a dedented function source file ``name + suffix`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}{suffix}"
    path.write_text(textwrap.dedent(source).lstrip())
    return path


@pytest.fixture
def prepare_home(
    tmp_path: Path, signing_key: SigningKey, runtime_artifact: Artifact, testbed_db: Path
) -> Callable[..., Path]:
    """Make a node folder: trusted key, runtime installed, testbed data, optional extras.

    ``prepare_home(name="node", functions={"f": "def main(data, params): ..."},
    policy={...}, node_yaml={...}, readings=True, runtime=True)`` returns the folder.
    ``functions`` values are Python source, or WAT text for names given in ``core``.
    """

    def prepare(
        name: str = "node",
        *,
        functions: dict[str, str] | None = None,
        core: dict[str, str] | None = None,
        policy: dict[str, Any] | None = None,
        node_yaml: dict[str, Any] | None = None,
        readings: bool = True,
        runtime: bool = True,
    ) -> Path:
        from fades.functions.build import build_core, build_python
        from fades.functions.keys import TrustStore, public_pem
        from fades.functions.store import FunctionStore

        home = tmp_path / name
        (home / "trusted").mkdir(parents=True)
        (home / "trusted" / f"{signing_key.id}.pub").write_bytes(public_pem(signing_key.public))
        store = FunctionStore(home / "artifacts", TrustStore.from_dir(home / "trusted"))
        if runtime:
            store.add(runtime_artifact)
        src_dir = tmp_path / f"{name}-src"
        for fname, source in (functions or {}).items():
            store.add(build_python(write_source(src_dir, fname, source), key=signing_key))
        for fname, wat in (core or {}).items():
            path = write_source(src_dir, fname, wat, ".wat")
            store.add(build_core(path, key=signing_key))
        if readings:
            shutil.copy(testbed_db, home / "readings.db")
        if policy is not None:
            (home / "policy.yaml").write_text(yaml.safe_dump(policy))
        if node_yaml is not None:
            (home / "node.yaml").write_text(yaml.safe_dump(node_yaml))
        return home

    return prepare


@pytest.fixture
def open_node() -> Iterator[Callable[..., Any]]:
    """Open ``Node(home, **kwargs)``; every node opened this way is closed at teardown."""
    from fades.node import Node

    nodes: list[Node] = []

    def open_(home: Path, **kwargs: Any) -> Node:
        node = Node(home, **kwargs)
        nodes.append(node)
        return node

    yield open_
    for node in reversed(nodes):
        with contextlib.suppress(Exception):  # already closed by the test
            node.close()


@pytest.fixture
def make_node(
    prepare_home: Callable[..., Path], open_node: Callable[..., Any]
) -> Callable[..., Any]:
    """Prepare a node folder and open it: ``make_node(functions=..., capacity=1, ...)``.

    Keyword arguments of :func:`prepare_home` prepare the folder; ``capacity``,
    ``scheduling`` and ``autostart`` go to :class:`fades.node.Node`.
    """

    def make(name: str = "node", **kwargs: Any) -> Any:
        node_kw = {k: kwargs.pop(k) for k in ("capacity", "scheduling", "autostart") if k in kwargs}
        return open_node(prepare_home(name, **kwargs), **node_kw)

    return make


def _task(
    artifact: str,
    *,
    tenant: str = "facilities",
    data: list[dict[str, Any]] | None = None,
    task_id: str | None = None,
    **function: Any,
) -> dict[str, Any]:
    default = [{"name": "t", "select": {"location": "room1", "sensor_type": "temperature"}}]
    creds: dict[str, Any] = {"tenant": tenant}
    if task_id is not None:
        creds["task_id"] = task_id
    return {
        "credentials": creds,
        "data": data or default,
        "function": {"artifact": artifact, **function},
    }


@pytest.fixture
def make_task() -> Callable[..., dict[str, Any]]:
    """``make_task("fn", memory_mib=32, ...)``: a task mapping for function ``fn``.

    By default it reads room1's temperature as dataset ``t`` for tenant ``facilities``;
    ``tenant``, ``data`` and ``task_id`` override that, other keywords go to ``function``.
    """
    return _task


@pytest.fixture(scope="module")
def sandbox(runtime_artifact: Artifact) -> Any:
    """A :class:`~fades.sandbox.PythonSandbox` on the signed runtime, per test module."""
    from fades.sandbox import PythonSandbox

    return PythonSandbox(runtime_artifact)


# --- fabric ----------------------------------------------------------------------------------
@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[Any]:
    """A real nats-server (JetStream + MQTT gateway) on free loopback ports, per test."""
    from fades.fabric import EmbeddedNats

    server = EmbeddedNats(tmp_path / "nats", name="fades-test")
    server.start(timeout=120.0)  # a loaded 2-core CI machine can take many seconds
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Any]:
    """A hub nats-server (domain ``hub``) with a leafnode listener on ``hub.leaf_port``."""
    from fades.fabric.leaf import HUB_DOMAIN, hub_leaf_config
    from fades.fabric.server import EmbeddedNats, free_port

    leaf_port = free_port()
    server = EmbeddedNats(
        tmp_path / "nats" / "hub1",
        name="hub1",
        domain=HUB_DOMAIN,
        extra_config=hub_leaf_config(leaf_port),
    )
    server.leaf_port = leaf_port  # type: ignore[attr-defined]
    server.start(timeout=120.0)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def leaf(tmp_path: Path, hub: Any) -> Iterator[Any]:
    """The leaf nats-server of site ``edge1`` (its domain), joined to :func:`hub`."""
    from fades.fabric.leaf import EmbeddedLeaf

    site = EmbeddedLeaf(tmp_path, "edge1", f"nats-leaf://127.0.0.1:{hub.leaf_port}")
    site.start(timeout=120.0)
    try:
        yield site
    finally:
        site.stop()
