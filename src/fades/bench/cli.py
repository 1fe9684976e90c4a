"""``fades bench``: Experiments that reproduce the seeds' figures."""

from __future__ import annotations

import typer

bench_app = typer.Typer(help="Experiments that reproduce the seeds' figures.", no_args_is_help=True)
