"""``fades sensors``: Simulated IoT sensors over MQTT."""

from __future__ import annotations

import typer

sensors_app = typer.Typer(help="Simulated IoT sensors over MQTT.", no_args_is_help=True)
