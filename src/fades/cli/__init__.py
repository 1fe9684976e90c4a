"""The ``fades`` command line (console script ``fades = "fades.cli:app"``).

One module per command group: :mod:`~fades.cli.keys`, :mod:`~fades.cli.fn`,
:mod:`~fades.cli.data`, :mod:`~fades.cli.task`, :mod:`~fades.cli.local` (``demo``, ``up``),
:mod:`~fades.cli.sensors`, :mod:`~fades.cli.bench`; ``node``, ``controller`` and ``sim`` live
beside the code they run (:mod:`fades.node.cli`, :mod:`fades.controller.cli`,
:mod:`fades.placement.cli`). Every command works on one node folder: ``--home`` or
``FADES_HOME`` (default ``~/.fades``).

Errors are translated in one place, :meth:`FadesApp.__call__` with
:func:`fades.cli.common.report`: one line on stderr, exit status 2 for bad input (and 1 for
a task that ran and failed, or for a bug), a traceback only with ``--debug`` or
``FADES_DEBUG=1``. What a function or a remote party said is printed through
:mod:`fades.cli.safe`.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import click
import typer

from fades.cli.bench import bench_app
from fades.cli.common import report
from fades.cli.data import data_app
from fades.cli.fn import fn_app
from fades.cli.keys import keys_app
from fades.cli.local import demo, up
from fades.cli.sensors import sensors_app
from fades.cli.task import task_app

__all__ = ["app", "main"]


class FadesApp(typer.Typer):
    """The root command: runs a command and translates whatever escapes it into one line."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            sys.stderr.write("interrupted\n")
            sys.exit(130)
        except Exception as exc:  # the CLI boundary: every error becomes one line
            sys.exit(report(exc))


app = FadesApp(
    help="fades: run signed WebAssembly functions next to IoT data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    debug: Annotated[
        bool,
        typer.Option("--debug", help="show the traceback of an error ($FADES_DEBUG=1)"),
    ] = False,
) -> None:
    """fades: run signed WebAssembly functions next to IoT data."""
    if debug:
        os.environ["FADES_DEBUG"] = "1"


def _mount() -> None:
    from fades.controller.cli import controller_app
    from fades.node.cli import node_app

    app.add_typer(keys_app, name="keys")
    app.add_typer(fn_app, name="fn")
    app.add_typer(data_app, name="data")
    app.add_typer(task_app, name="task")
    app.command("demo")(demo)
    app.command("up")(up)
    app.add_typer(node_app, name="node")
    app.add_typer(controller_app, name="controller")
    app.add_typer(sensors_app, name="sensors")
    app.add_typer(bench_app, name="bench")
    try:  # the placement simulator is optional at import time (numpy/scipy heavy)
        from fades.placement.cli import sim_app
    except ImportError:  # pragma: no cover
        return
    app.add_typer(sim_app, name="sim")


_mount()


def main() -> None:  # pragma: no cover - console-script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
