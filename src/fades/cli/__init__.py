"""The ``fades`` command line (console script ``fades = "fades.__main__:main"``, which imports it).

One module per command group: :mod:`~fades.cli.keys`, :mod:`~fades.cli.fn`,
:mod:`~fades.cli.data`, :mod:`~fades.cli.task`, :mod:`~fades.cli.pipeline`,
:mod:`~fades.cli.local` (``demo``, ``up``),
:mod:`~fades.cli.sensors`, :mod:`~fades.cli.bench`; ``node``, ``controller`` and ``sim`` live
beside the code they run (:mod:`fades.node.cli`, :mod:`fades.controller.cli`,
:mod:`fades.placement.cli`). Every command works on one node folder: ``--home`` or
``FADES_HOME`` (default ``~/.fades``).

Errors are translated in one place, :meth:`FadesApp.__call__` with
:func:`fades.cli.common.report` (a usage error too: :class:`LazyRoot` turns typer's boxed
usage panel into a :class:`fades.errors.UsageError`, see :mod:`fades.cli.usage`): one line on
stderr, exit status 2 for bad input (and 1 for a task that ran and failed, or for a bug), a
traceback only with ``--debug`` or ``FADES_DEBUG=1``. What a function or a remote party said
is printed through :mod:`fades.cli.safe`. When stdout's reader goes away (``fades ... |
head -1``) the command stops quietly with status 141, as a Unix tool killed by SIGPIPE.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated, Any

import click
import typer
from typer import _click as tclick  # typer >= 0.29 vendors click; its group uses these
from typer.core import TyperCommand, TyperGroup

from fades.cli.common import quiet_exit_on_broken_pipe, report
from fades.cli.usage import command_path, usage_error
from fades.errors import MissingExtra

__all__ = ["app", "main"]


# name -> (module, attribute, short help, extra that provides its heavy dependencies).
# Nothing below is imported until its command runs: ``fades --help`` loads typer and rich only.
LAZY: dict[str, tuple[str, str, str, str | None]] = {
    "keys": ("fades.cli.keys", "keys_app", "Signing keys and trust.", None),
    "fn": ("fades.cli.fn", "fn_app", "Build, sign and install functions.", None),
    "data": ("fades.cli.data", "data_app", "The node's local sensor data.", "sim"),
    "task": ("fades.cli.migrate", "task_app", "Run tasks on this node or the cluster.", None),
    "pipeline": (
        "fades.cli.pipeline",
        "pipeline_app",
        "Pipelines of functions across nodes.",
        None,
    ),
    "nodes": ("fades.cli.migrate", "nodes_app", "The cluster's nodes; drain one.", None),
    "devices": (
        "fades.cli.devices",
        "devices_app",
        "Sensors and actuators: list, command, audit.",
        None,
    ),
    "demo": ("fades.cli.local", "demo", "Run the end-to-end demo on one machine.", "sim"),
    "up": ("fades.cli.local", "up", "Start a local cluster: broker, controller, nodes.", "sim"),
    "node": ("fades.node.cli", "node_app", "Run an edge node agent.", None),
    "controller": ("fades.controller.cli", "controller_app", "Run the controller.", None),
    "sensors": ("fades.cli.sensors", "sensors_app", "Simulated IoT sensors over MQTT.", "sim"),
    "bench": ("fades.cli.bench", "bench_app", "Experiments and their figures.", "bench"),
    "sim": ("fades.placement.cli", "sim_app", "Simulators.", "sim"),
}
HEAVY = ("matplotlib", "scipy")


def _nothing() -> None:
    """A callback that keeps the wrapper a group."""


class LazyRoot(TyperGroup):
    """The root group: loads a command group's module only when that group is used."""

    _listing = False
    _argv: tuple[str, ...] = ()

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: tclick.Context | None = None,
        **extra: Any,
    ) -> tclick.Context:
        self._argv = tuple(args)
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except BrokenPipeError:  # --version or --help into a closed pipe
            quiet_exit_on_broken_pipe()
        except KeyboardInterrupt:
            sys.stderr.write("interrupted\n")
            raise typer.Exit(130) from None
        except tclick.exceptions.NoArgsIsHelpError:
            raise
        except tclick.exceptions.UsageError as exc:  # a bad root option: one line
            raise usage_error(exc, info_name or "fades") from None

    def invoke(self, ctx: tclick.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # before typer's own handler, which exits 1
            quiet_exit_on_broken_pipe()
        except KeyboardInterrupt:  # typer's own handler exits 130 without a word
            sys.stderr.write("interrupted\n")
            raise typer.Exit(130) from None
        except tclick.exceptions.NoArgsIsHelpError:
            raise
        except tclick.exceptions.UsageError as exc:  # any command's usage error: one line
            raise usage_error(
                exc, command_path(self, self._argv, ctx.info_name or "fades")
            ) from None

    def list_commands(self, ctx: tclick.Context) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in LAZY if n not in self.commands)]

    def get_command(self, ctx: tclick.Context, cmd_name: str) -> tclick.Command | None:
        if cmd_name in self.commands or cmd_name not in LAZY:
            return super().get_command(ctx, cmd_name)
        module, attr, short, extra = LAZY[cmd_name]
        if self._listing:  # the root's help: the short help, no import
            return TyperCommand(cmd_name, short_help=short, help=short)
        try:
            obj = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name not in HEAVY or extra is None:
                raise
            raise MissingExtra(
                f"fades {cmd_name} needs {exc.name}: pip install 'fades[{extra}]'"
            ) from None
        wrapper = typer.Typer(add_completion=False)  # mounted as add_typer/command would
        wrapper.callback()(_nothing)
        if isinstance(obj, typer.Typer):
            wrapper.add_typer(obj, name=cmd_name)
        else:
            wrapper.command(cmd_name)(obj)
        group = typer.main.get_command(wrapper)
        assert isinstance(group, TyperGroup)
        cmd = group.commands[cmd_name]
        cmd.name = cmd_name
        self.commands[cmd_name] = cmd
        return cmd

    def format_help(self, ctx: tclick.Context, formatter: tclick.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


class FadesApp(typer.Typer):
    """The root command: runs a command and translates whatever escapes it into one line."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._call(*args, **kwargs)
        except BrokenPipeError:  # `fades ... | head -1`: stop quietly, as Unix tools do
            quiet_exit_on_broken_pipe()

    def _call(self, *args: Any, **kwargs: Any) -> Any:
        try:
            try:
                return super().__call__(*args, **kwargs)
            finally:  # a reader that left shows here, not as a warning at interpreter exit
                sys.stdout.flush()
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except BrokenPipeError:
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
    cls=LazyRoot,
)


def _print_version() -> None:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        typer.echo(f"fades {dist_version('fades')}")
    except PackageNotFoundError:  # pragma: no cover - a source checkout, not installed
        typer.echo("fades (not installed)")
    raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[
        bool,
        typer.Option("--debug", help="show the traceback of an error ($FADES_DEBUG=1)"),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="print the fades version and exit",
            is_eager=True,
            callback=lambda value: _print_version() if value else None,
        ),
    ] = False,
) -> None:
    """fades: run signed WebAssembly functions next to IoT data."""
    del version
    if debug:
        os.environ["FADES_DEBUG"] = "1"


def main() -> None:  # pragma: no cover - console-script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
