"""``fades node``: Run this machine as an edge node agent on the fabric."""

from __future__ import annotations

import typer

node_app = typer.Typer(help="Run this machine as an edge node agent on the fabric.", no_args_is_help=True)
