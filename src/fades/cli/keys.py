"""``fades keys``: signing keys and the node's trusted keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fades.cli.common import HomeOpt, console, home_dir, node_folder

keys_app = typer.Typer(help="Signing keys and trust.", no_args_is_help=True)


def trust(home: Path, pub: Path) -> str:
    from fades.functions.keys import install_trusted

    return install_trusted(home / "trusted", pub)


@keys_app.command("generate")
def generate(
    name: Annotated[str, typer.Option(help="file name stem of the key pair")] = "signing",
    out: Annotated[Path | None, typer.Option(help="folder (default: HOME/keys)")] = None,
    trusted: Annotated[
        bool, typer.Option("--trust/--no-trust", help="also make this node trust the key")
    ] = True,
    home: HomeOpt = None,
) -> None:
    """Generate an Ed25519 key pair for signing functions."""
    from fades.functions.keys import SigningKey

    # sets a node up: its folder is made, unless only --out is written (--no-trust)
    h = node_folder(home, create=True) if trusted or out is None else home_dir(home)
    key = SigningKey.generate(name)
    priv, pub = key.save(out or h / "keys")
    console.print(
        f"private key: {priv}\npublic key:  {pub}\nkey id:      {key.id}",
        markup=False,
        highlight=False,
    )
    if trusted:
        trust(h, pub)
        console.print(f"this node ({h}) now trusts key {key.id}", markup=False)


@keys_app.command("trust")
def trust_key(public_key: Path, home: HomeOpt = None) -> None:
    """Make the node accept artifacts signed by PUBLIC_KEY."""
    kid = trust(node_folder(home, create=True), public_key)
    console.print(f"trusted key {kid}", markup=False)


@keys_app.command("list")
def list_keys(home: HomeOpt = None) -> None:
    """The keys this node trusts (key id and file) and its own signing keys."""
    from fades.functions.keys import key_id, load_public

    h = node_folder(home)
    for label, folder, pattern in (
        ("trusted", h / "trusted", "*"),
        ("signing", h / "keys", "*.pub"),
    ):
        for path in sorted(folder.glob(pattern)) if folder.is_dir() else []:
            try:
                kid = key_id(load_public(path))
            except Exception as exc:  # one unreadable file does not hide the others
                kid = f"unreadable ({type(exc).__name__})"
            console.print(f"{label:<8} {kid}  {path}", markup=False, highlight=False)
