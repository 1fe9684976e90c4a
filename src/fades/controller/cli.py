"""``fades controller``: Run the controller (registry, repository, HTTP API)."""

from __future__ import annotations

import typer

controller_app = typer.Typer(help="Run the controller (registry, repository, HTTP API).", no_args_is_help=True)
