"""The ``fades`` command line.

Every command works on one node folder: ``--home`` or ``FADES_HOME`` (default ``~/.fades``).
Errors are printed as one line naming the problem, with exit status 2 for bad input and 1
for a task that ran and failed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from fades import paths
from fades.errors import FadesError, TaskValidationError

app = typer.Typer(
    help="fades: run signed WebAssembly functions next to IoT data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="Signing keys and trust.", no_args_is_help=True)
fn_app = typer.Typer(help="Build, sign and install functions.", no_args_is_help=True)
data_app = typer.Typer(help="The node's local sensor data.", no_args_is_help=True)
task_app = typer.Typer(help="Offload tasks to this node.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(fn_app, name="fn")
app.add_typer(data_app, name="data")
app.add_typer(task_app, name="task")


def _mount_cluster_commands() -> None:
    from fades.bench.cli import bench_app
    from fades.controller.cli import controller_app
    from fades.node.cli import node_app
    from fades.sensors.cli import sensors_app

    app.add_typer(node_app, name="node")
    app.add_typer(controller_app, name="controller")
    app.add_typer(sensors_app, name="sensors")
    app.add_typer(bench_app, name="bench")


_mount_cluster_commands()

try:  # the placement simulator is optional at import time (numpy/scipy heavy)
    from fades.placement.cli import sim_app

    app.add_typer(sim_app, name="sim")
except ImportError:  # pragma: no cover
    pass

# Wide enough for the timing tables when output goes to a file or a pipe.
console = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home", help="node folder (default: $FADES_HOME or ~/.fades)", show_default=False
    ),
]


def _home(home: Path | None) -> Path:
    return home if home is not None else paths.home()


@contextmanager
def _errors() -> Iterator[None]:
    """Print fades errors as one clear line instead of a traceback."""
    try:
        yield
    except FadesError as exc:
        err.print(f"[bold red]error[/] ({exc.kind}): {exc}", soft_wrap=True)
        if isinstance(exc, TaskValidationError) and len(exc.problems) > 1:
            for field, reason in exc.problems:
                err.print(f"  - {field}: {reason}")
        raise typer.Exit(2) from None
    except FileExistsError as exc:
        err.print(f"[bold red]error[/]: {exc}", soft_wrap=True)
        raise typer.Exit(2) from None


# --- keys ------------------------------------------------------------------------------------
@keys_app.command("generate")
def keys_generate(
    name: Annotated[str, typer.Option(help="file name stem of the key pair")] = "signing",
    out: Annotated[Path | None, typer.Option(help="folder (default: HOME/keys)")] = None,
    trust: Annotated[bool, typer.Option(help="also make this node trust the key")] = True,
    home: HomeOpt = None,
) -> None:
    """Generate an Ed25519 key pair for signing functions."""
    from fades.functions.keys import SigningKey

    with _errors():
        key = SigningKey.generate(name)
        priv, pub = key.save(out or _home(home) / "keys")
        console.print(f"private key: {priv}\npublic key:  {pub}\nkey id:      {key.id}")
        if trust:
            _trust(_home(home), pub)
            console.print(f"this node ({_home(home)}) now trusts key {key.id}")


def _trust(home: Path, pub: Path) -> str:
    from fades.functions.keys import install_trusted

    return install_trusted(home / "trusted", pub)


@keys_app.command("trust")
def keys_trust(public_key: Path, home: HomeOpt = None) -> None:
    """Make the node accept artifacts signed by PUBLIC_KEY."""
    with _errors():
        kid = _trust(_home(home), public_key)
        console.print(f"trusted key {kid}")


# --- functions -------------------------------------------------------------------------------
KeyOpt = Annotated[
    Path | None,
    typer.Option("--key", help="private key to sign with (default: HOME/keys/signing.key)"),
]


def _signing_key(key: Path | None, home: Path) -> Any:
    from fades.functions.keys import SigningKey

    path = key or home / "keys" / "signing.key"
    if not path.exists():
        from fades.errors import SignatureError

        raise SignatureError(
            f"no signing key at {path}; create one with 'fades keys generate' or pass --key"
        )
    return SigningKey.load(path)


@fn_app.command("build")
def fn_build(
    source: Annotated[Path, typer.Argument(help="a .py function, or a .wat/.wasm core module")],
    key: KeyOpt = None,
    name: Annotated[str | None, typer.Option(help="function name (default: file stem)")] = None,
    entry: Annotated[str, typer.Option(help="entry function of a Python source")] = "main",
    out: Annotated[Path | None, typer.Option(help="write the artifact here")] = None,
    install: Annotated[bool, typer.Option(help="install into this node")] = True,
    home: HomeOpt = None,
) -> None:
    """Build and sign a function artifact (and install it on this node)."""
    from fades.functions.build import build_function

    with _errors():
        h = _home(home)
        art = build_function(source, key=_signing_key(key, h), name=name, entry=entry)
        if out is not None:
            out.write_bytes(art.to_bytes())
        console.print(
            f"built {art.kind} function [bold]{art.name}[/] {art.digest} "
            f"({len(art)} bytes, signed by {art.signer})"
        )
        if out is not None:
            console.print(f"wrote {out}")
        if install:
            _install(h, art.to_bytes())


def _install(home: Path, data: bytes) -> None:
    from fades.functions.keys import TrustStore
    from fades.functions.store import FunctionStore

    store = FunctionStore(home / "artifacts", TrustStore.from_dir(home / "trusted"))
    art = store.add(data)
    console.print(f"installed {art.name} on node {home}")


@fn_app.command("runtime")
def fn_runtime(
    key: KeyOpt = None,
    out: Annotated[Path | None, typer.Option(help="write the artifact here")] = None,
    install: Annotated[bool, typer.Option(help="install into this node")] = True,
    home: HomeOpt = None,
) -> None:
    """Build and sign the shared Python runtime (once per fades version; takes seconds)."""
    from fades.functions.build import build_runtime

    with _errors():
        h = _home(home)
        with _spinner("building the Python runtime with componentize-py"):
            art = build_runtime(key=_signing_key(key, h))
        console.print(f"runtime {art.digest} ({len(art) / 2**20:.1f} MiB)")
        if out is not None:
            out.write_bytes(art.to_bytes())
        if install:
            _install(h, art.to_bytes())


@fn_app.command("add")
def fn_add(artifact: Path, home: HomeOpt = None) -> None:
    """Verify and install an artifact file on this node."""
    with _errors():
        try:
            data = artifact.read_bytes()
        except OSError as exc:
            from fades.errors import ArtifactFormatError

            raise ArtifactFormatError(f"cannot read {artifact}: {exc.strerror}") from None
        _install(_home(home), data)


@fn_app.command("list")
def fn_list(home: HomeOpt = None) -> None:
    """List the functions installed on this node."""
    from fades.functions.keys import TrustStore
    from fades.functions.store import FunctionStore

    with _errors():
        h = _home(home)
        store = FunctionStore(h / "artifacts", TrustStore.from_dir(h / "trusted"))
        table = Table("name", "kind", "digest", "bytes", "signer")
        for name, digest in store.names().items():
            art = store.get(digest)
            table.add_row(name, art.kind, digest[:23] + "…", str(len(art)), art.signer or "-")
        console.print(table)


ControllerOpt = Annotated[
    str,
    typer.Option(
        "--controller", envvar="FADES_CONTROLLER", help="controller URL ($FADES_CONTROLLER)"
    ),
]
TokenOpt = Annotated[
    str, typer.Option("--token", envvar="FADES_TOKEN", help="bearer token ($FADES_TOKEN)")
]


@fn_app.command("upload")
def fn_upload(
    artifact: Annotated[Path, typer.Argument(help="a signed artifact file (.fart)")],
    controller: ControllerOpt,
    token: TokenOpt,
) -> None:
    """Upload a signed artifact to the controller's function repository."""
    from fades.client import FadesClient

    with _errors(), FadesClient(controller, token) as client:
        rec = client.upload(artifact)
        console.print(
            f"uploaded {rec['kind']} function [bold]{rec['name']}[/] {rec['digest']} "
            f"({rec['size']:,} bytes, signed by {rec['signer']})"
        )


# --- data ------------------------------------------------------------------------------------
@contextmanager
def _readings(home: Path | None) -> Iterator[tuple[Path, Any]]:
    """The node's SQLite store, opened (folder created) and closed around a command."""
    from fades.broker import SQLiteConnector

    h = _home(home)
    h.mkdir(parents=True, exist_ok=True)
    store = SQLiteConnector(h / "readings.db")
    try:
        yield h / "readings.db", store
    finally:
        store.close()


@data_app.command("generate")
def data_generate(
    days: Annotated[float, typer.Option(help="days of readings")] = 2.0,
    rate: Annotated[float, typer.Option(help="seconds between readings of one sensor")] = 10.0,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same values)")] = 0,
    home: HomeOpt = None,
) -> None:
    """Generate the five-room office testbed into the node's SQLite store."""
    from datetime import UTC, datetime, timedelta

    from fades.testbed import populate

    # The readings end now, so that tasks asking for "the last N seconds" find them.
    start = datetime.now(UTC) - timedelta(days=days)
    with _errors(), _readings(home) as (path, store):
        with _progress() as (progress, task_bar):
            n = populate(
                store, days, rate, seed, start, progress=lambda d, t: progress(task_bar, d, t)
            )
        console.print(f"wrote {n:,} readings to {path} ({store.count():,} in total)")


@data_app.command("load")
def data_load(
    dataset: Annotated[str, typer.Argument(help="'river-occupancy' or a CSV file of readings")],
    location: Annotated[str, typer.Option(help="location for the river data set")] = "lab",
    home: HomeOpt = None,
) -> None:
    """Load a real data set into the node's store."""
    from fades.broker import CSVConnector

    with _errors(), _readings(home) as (path, store):
        if dataset == "river-occupancy":
            from fades.testbed import load_river_occupancy

            n = load_river_occupancy(store, location=location)
        else:
            n = store.write(CSVConnector(dataset).load())
        console.print(f"loaded {n:,} readings into {path}")


@data_app.command("info")
def data_info(home: HomeOpt = None) -> None:
    """Summarise the data this node holds."""
    from datetime import UTC, datetime

    with _errors(), _readings(home) as (_, store):
        table = Table("location", "sensor type", "unit", "rows", "from", "to")

        def fmt(ts: float | None) -> str:
            return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M") if ts else "-"

        for s in store.describe():
            table.add_row(
                s.location, s.sensor_type, s.unit, f"{s.rows:,}", fmt(s.first_ts), fmt(s.last_ts)
            )
        console.print(table)


# --- tasks -----------------------------------------------------------------------------------
@task_app.command("run")
def task_run(
    task_file: Annotated[Path, typer.Argument(help="task in YAML or JSON")],
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the result")] = 300.0,
    home: HomeOpt = None,
) -> None:
    """Offload one task to this node and print its result and timing breakdown."""
    from fades.node import Node
    from fades.task import load_task

    with _errors():
        task = load_task(task_file)
        with Node(_home(home)) as node:
            rec = node.orchestrator.run(task, timeout=timeout)
    if json_out:
        sys.stdout.write(json.dumps(rec.to_dict(), indent=2) + "\n")
    else:
        show_record(rec.to_dict(), title=str(task_file))
    if rec.status != "done":
        raise typer.Exit(1)


@task_app.command("submit")
def task_submit(
    task_file: Annotated[Path, typer.Argument(help="task in YAML or JSON")],
    controller: ControllerOpt,
    token: TokenOpt,
    node: Annotated[
        str | None, typer.Option(help="run on this node (default: placed by data locality)")
    ] = None,
    cloud: Annotated[
        bool, typer.Option("--cloud", help="run in the cloud on data pulled from the node")
    ] = False,
    wait: Annotated[bool, typer.Option("--wait", help="wait for the result and show it")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait with --wait")] = 300.0,
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Submit a task to the controller (to a named node, auto-placed, or to the cloud)."""
    from fades.client import FadesClient
    from fades.task import load_task

    with _errors(), FadesClient(controller, token) as client:
        task = load_task(task_file).model_dump(mode="json")
        receipt = client.submit(task, node=node, where="cloud" if cloud else "edge")
        info = client.wait(receipt["task_id"], timeout=timeout) if wait else None
    if json_out:
        sys.stdout.write(json.dumps(info or receipt, indent=2) + "\n")
    else:
        console.print(
            f"task {receipt['task_id']} accepted: {receipt['where']} on node "
            f"[bold]{receipt['node']}[/] ({receipt['placement']})"
        )
        if info is not None:
            show_remote(info, title=str(task_file))
    if info is not None and info["status"] != "done":
        raise typer.Exit(1)


def show_remote(info: dict[str, Any], title: str = "") -> None:
    """Print a task as the controller reports it (result, full timing breakdown, bytes)."""
    status = info["status"]
    colour = {"done": "green", "failed": "red"}.get(status, "yellow")
    where = f"{info['where']} on {info['node']}"
    console.print(f"[bold]{title}[/] task {info['task_id']} ({where}): [{colour}]{status}[/]")
    if info.get("error"):
        console.print(f"  [red]{info['error_kind']}[/]: {info['error']}")
    if info.get("result") is not None:
        lines = json.dumps(info["result"], indent=1).splitlines()
        console.print("\n".join(lines[:40]) + ("\n  …" if len(lines) > 40 else ""))
    timing = info.get("timing") or {}
    if timing:
        table = Table("stage", "ms", title="where the time went")
        for k, v in timing.items():
            table.add_row(k, f"{v * 1e3:.2f}")
        console.print(table)
    if info.get("bytes_read") is not None:
        console.print(
            f"  bytes read at the node: {info['bytes_read']:,}; returned: "
            f"{info['bytes_returned']:,}; sent upstream: {info.get('bytes_uplink') or 0:,}"
        )


def show_record(rec: dict[str, Any], title: str = "") -> None:
    """Print a task's outcome, its timing breakdown and bytes in/out."""
    status = rec["status"]
    colour = "green" if status == "done" else "red"
    console.print(f"[bold]{title}[/] task {rec['id']}: [{colour}]{status}[/]")
    if rec.get("error"):
        console.print(f"  [red]{rec['error_kind']}[/]: {rec['error']}")
    if rec.get("result") is not None:
        text = json.dumps(rec["result"], indent=1)
        lines = text.splitlines()
        console.print("\n".join(lines[:40]) + ("\n  …" if len(lines) > 40 else ""))
    timing = rec.get("timing") or {}
    if timing:
        from fades.node.orchestrator import TIMING_KEYS

        table = Table("stage", "ms", title="where the time went")
        for k in TIMING_KEYS:
            if k in timing:
                table.add_row(k, f"{timing[k] * 1e3:.2f}")
        console.print(table)
    if rec.get("bytes_read") is not None:
        read, ret = rec["bytes_read"], rec["bytes_returned"]
        ratio = f" ({read / ret:,.0f}x smaller)" if ret else ""
        console.print(f"  bytes read at the edge: {read:,}; bytes returned: {ret:,}{ratio}")


# --- demo ------------------------------------------------------------------------------------
@app.command("demo")
def demo(
    home: Annotated[
        Path | None, typer.Option(help="demo node folder (default: ./.fades/demo)")
    ] = None,
    days: Annotated[float, typer.Option(help="days of testbed data")] = 7.0,
    rate: Annotated[float, typer.Option(help="seconds between readings")] = 30.0,
    examples: Annotated[Path | None, typer.Option(help="folder with functions/ and tasks/")] = None,
    nodes: Annotated[
        int, typer.Option(min=0, max=16, help="node agents in the cluster part (0: skip it)")
    ] = 3,
) -> None:
    """The main job: one node end to end, then offloading across a local cluster."""
    from fades.demo import run_demo

    with _errors():
        run_demo(
            home=home or Path(".fades") / "demo",
            days=days,
            rate=rate,
            examples=examples,
            console=console,
            progress=_progress,
            spinner=_spinner,
            cluster_nodes=nodes,
        )


@app.command("up")
def up(
    nodes: Annotated[int, typer.Option(min=1, max=32, help="node agents to start")] = 3,
    home: Annotated[
        Path | None, typer.Option(help="cluster folder, made fresh (default: ./.fades/up)")
    ] = None,
    days: Annotated[float, typer.Option(help="days of history per node")] = 1.0,
    sensors: Annotated[
        bool, typer.Option(help="stream live readings over MQTT for every node's rooms")
    ] = True,
    duration: Annotated[
        float | None, typer.Option(help="stop by itself after this many seconds")
    ] = None,
) -> None:
    """A local cluster: embedded NATS, the controller and N node agents. Ctrl-C stops it all."""
    from fades.cluster import run_up

    with _errors():
        run_up(
            home or Path(".fades") / "up",
            nodes=nodes,
            duration=duration,
            sensors=sensors,
            days=days,
            say=lambda line: console.print(line, highlight=False, soft_wrap=True),
        )


# --- helpers ---------------------------------------------------------------------------------
@contextmanager
def _progress() -> Iterator[tuple[Callable[[Any, int, int], None], Any]]:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        bar = progress.add_task("generating readings", total=0)

        def update(task_id: Any, done: int, total: int) -> None:
            progress.update(task_id, completed=done, total=total)

        yield update, bar


@contextmanager
def _spinner(text: str) -> Iterator[None]:
    with Progress(SpinnerColumn(), TextColumn(text), TimeElapsedColumn(), console=console) as p:
        p.add_task(text, total=None)
        yield


def main() -> None:  # pragma: no cover - console-script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
