"""``fades fn``: build, sign, install, list and upload functions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fades.cli.common import (
    ControllerOpt,
    HomeOpt,
    JsonOpt,
    TokenOpt,
    console,
    home_dir,
    node_folder,
    output_file,
    spinner,
)
from fades.cli.render import print_json
from fades.cli.safe import markup

fn_app = typer.Typer(help="Build, sign and install functions.", no_args_is_help=True)

KeyOpt = Annotated[
    Path | None,
    typer.Option("--key", help="private key to sign with (default: HOME/keys/signing.key)"),
]


def signing_key(key: Path | None, home: Path) -> Any:
    from fades.errors import SignatureError
    from fades.functions.keys import SigningKey

    path = key or home / "keys" / "signing.key"
    if not path.exists():
        raise SignatureError(
            f"no signing key at {path}; create one with 'fades keys generate' or pass --key"
        )
    return SigningKey.load(path)


def install(home: Path, data: bytes) -> None:
    from fades.functions.keys import TrustStore
    from fades.functions.store import FunctionStore

    store = FunctionStore(home / "artifacts", TrustStore.from_dir(home / "trusted"))
    art = store.add(data)
    console.print(f"installed {markup(art.name)} on node {markup(home)}", highlight=False)


@fn_app.command("build")
def build(
    source: Annotated[Path, typer.Argument(help="a .py function, or a .wat/.wasm core module")],
    key: KeyOpt = None,
    name: Annotated[str | None, typer.Option(help="function name (default: file stem)")] = None,
    entry: Annotated[str, typer.Option(help="entry function of a Python source")] = "main",
    out: Annotated[
        Path | None,
        typer.Option(help="write the artifact here (with --no-install, default: ./NAME.fart)"),
    ] = None,
    install_it: Annotated[
        bool, typer.Option("--install/--no-install", help="install into this node")
    ] = True,
    home: HomeOpt = None,
) -> None:
    """Build and sign a function artifact (and install it on this node).

    With --no-install and no --out the artifact is written to ./NAME.fart."""
    from fades.functions.build import build_function

    h, signer = _signer(home, key, install_it)
    if out is not None:
        out = output_file(out)  # before signing: a bad path is not found after the work
    art = build_function(source, key=signer, name=name, entry=entry)
    if out is None and not install_it:  # else it would be signed and thrown away
        out = output_file(Path(f"{art.name}.fart"))
    if out is not None:
        out.write_bytes(art.to_bytes())
    console.print(
        f"built {markup(art.kind)} function [bold]{markup(art.name)}[/] {markup(art.digest)} "
        f"({len(art)} bytes, signed by {markup(art.signer)})",
        highlight=False,
    )
    if out is not None:
        console.print(f"wrote {markup(out)}", highlight=False)
    if install_it:
        install(h, art.to_bytes())


def _signer(home: Path | None, key: Path | None, install_it: bool) -> tuple[Path, Any]:
    """The node folder and signing key build and runtime use: a folder that is a file is
    refused first, then a missing key (saying how to make one), then, when installing, a
    folder with no node in it (``--key K --no-install`` needs no node)."""
    h = home_dir(home)
    if h.exists() and not h.is_dir():
        node_folder(home)  # raises: names the file
    signer = signing_key(key, h)
    return (node_folder(home) if install_it else h), signer


@fn_app.command("runtime")
def runtime(
    key: KeyOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(help="write the artifact here (with --no-install, default: ./runtime.fart)"),
    ] = None,
    install_it: Annotated[
        bool, typer.Option("--install/--no-install", help="install into this node")
    ] = True,
    home: HomeOpt = None,
) -> None:
    """Build and sign the shared Python runtime (once per fades version; takes seconds)."""
    from fades.functions.build import build_runtime

    h, signer = _signer(home, key, install_it)
    if out is None and not install_it:  # else it would be signed and thrown away
        out = Path("runtime.fart")
    if out is not None:
        out = output_file(out)
    with spinner("building the Python runtime with componentize-py"):
        art = build_runtime(key=signer)
    console.print(f"runtime {art.digest} ({len(art) / 2**20:.1f} MiB)", markup=False)
    if out is not None:
        out.write_bytes(art.to_bytes())
        console.print(f"wrote {markup(out)}", highlight=False)
    if install_it:
        install(h, art.to_bytes())


@fn_app.command("add")
def add(artifact: Path, home: HomeOpt = None) -> None:
    """Verify and install an artifact file on this node."""
    from fades.errors import ArtifactFormatError
    from fades.functions.store import read_artifact

    try:
        data = read_artifact(artifact).to_bytes()  # bounded: size checked before reading
    except OSError as exc:
        raise ArtifactFormatError(f"cannot read {artifact}: {exc.strerror}") from None
    install(node_folder(home), data)


@fn_app.command("list")
def list_functions(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """List the functions installed on this node."""
    from fades.functions.keys import TrustStore
    from fades.functions.store import FunctionStore

    h = node_folder(home)
    store = FunctionStore(h / "artifacts", TrustStore.from_dir(h / "trusted"))
    if json_out:
        rows = []
        for name, digest in store.names().items():
            art = store.get(digest)
            rows.append(
                {
                    "name": name,
                    "kind": art.kind,
                    "digest": digest,
                    "bytes": len(art),
                    "signer": art.signer,
                    "description": art.manifest.get("description", ""),
                    "created": art.manifest.get("created"),
                }
            )
        print_json(rows)
        return
    table = Table("name", "kind", "digest", "bytes", "signer")
    for name, digest in store.names().items():
        art = store.get(digest)
        table.add_row(
            markup(name, 200, oneline=True),
            markup(art.kind, 40, oneline=True),
            markup(digest[:23], oneline=True) + "…",
            str(len(art)),
            markup(art.signer or "-", 200, oneline=True),
        )
    console.print(table)
    for file, why in store.skipped.items():
        name = markup(file, 200, oneline=True)
        why_text = markup(why, oneline=True)
        console.print(f"[yellow]not loaded[/]: {name}: {why_text}", highlight=False)
    for q in store.quarantine():
        console.print(
            f"[red]quarantined[/]: {markup(q.file, 200, oneline=True)} "
            f"({markup(q.kind, 40, oneline=True)}): {markup(q.reason, oneline=True)}",
            highlight=False,
        )


@fn_app.command("upload")
def upload(
    artifact: Annotated[Path, typer.Argument(help="a signed artifact file (.fart)")],
    controller: ControllerOpt,
    token: TokenOpt,
) -> None:
    """Upload a signed artifact to the controller's function repository."""
    from fades.client import FadesClient

    with FadesClient(controller, token) as client:
        rec = client.upload(artifact)
    size = rec.get("size")
    size_s = f"{size:,}" if isinstance(size, int) else markup(size, 40)
    console.print(
        f"uploaded {markup(rec.get('kind'))} function [bold]{markup(rec.get('name'))}[/] "
        f"{markup(rec.get('digest'))} ({size_s} bytes, "
        f"signed by {markup(rec.get('signer'))})",
        highlight=False,
    )


from fades.cli.fntest import test  # noqa: E402  (its own module: fades fn test)

fn_app.command("test")(test)


@fn_app.command("rm")
def remove(
    ref: Annotated[str, typer.Argument(help="a function name (every version) or sha256:<digest>")],
    home: HomeOpt = None,
) -> None:
    """Remove a function (every version of a name, or one digest) from this node's store.

    A running node keeps what it has loaded until it restarts.
    """
    from fades.errors import ArtifactError
    from fades.functions.keys import TrustStore
    from fades.functions.store import FunctionStore

    h = node_folder(home)

    def store() -> FunctionStore:
        return FunctionStore(h / "artifacts", TrustStore.from_dir(h / "trusted"))

    art = store().get(ref)  # an unknown name or digest is the store's own error
    removed: list[str] = []
    while art.digest not in removed:  # the newest version, then the one that resolves next
        (h / "artifacts" / f"{art.digest.removeprefix('sha256:')}.fart").unlink(missing_ok=True)
        removed.append(art.digest)
        console.print(f"removed {markup(art.name, oneline=True)} ({art.digest})", highlight=False)
        if ref.startswith("sha256:"):
            break
        try:
            art = store().get(ref)
        except ArtifactError:
            break
