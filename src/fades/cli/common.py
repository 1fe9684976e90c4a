"""What every ``fades`` command group shares: the consoles, common options, progress
helpers, and the one place where errors are translated at the CLI boundary.

:func:`report` turns any exception that escapes a command into one line on stderr: a
:class:`~fades.errors.FadesError` is ``error (kind): message`` with exit status 2, a failure
to reach a server names the URL (exit 2), anything else is one line with a hint (exit 1),
the traceback only with ``fades --debug`` or ``FADES_DEBUG=1``. :func:`node_folder` is where
``--home`` is checked (a file, or no node at a mistyped path, is one ``NodeFolderError``
line), and :func:`quiet_exit_on_broken_pipe` how a closed stdout ends a command (status
141). Every message is cleaned by :mod:`fades.cli.safe` first: it may quote a function's
output.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from fades import paths
from fades.cli.safe import markup
from fades.errors import FadesError, TaskValidationError

#: exit status when stdout's reader has gone (128 + SIGPIPE, what a shell shows for ``yes``)
BROKEN_PIPE_STATUS = 141


def quiet_exit_on_broken_pipe() -> NoReturn:
    """Stdout's reader went away (``fades ... | head -1``): stop quietly with status 141,
    as a Unix tool killed by SIGPIPE. Stdout is pointed at /dev/null first so that the
    interpreter's last flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no usable stdout at all: nothing left to protect
        pass
    sys.exit(BROKEN_PIPE_STATUS)


class _Console(Console):
    """A rich console that leaves on a broken pipe like the rest of the CLI (rich's own
    handler exits 1)."""

    def on_broken_pipe(self) -> None:
        quiet_exit_on_broken_pipe()


# Wide enough for the timing tables when output goes to a file or a pipe. No emoji codes:
# ":smile:" in a function's output stays ":smile:".
console = _Console(width=None if sys.stdout.isatty() else 120, emoji=False)
err = _Console(stderr=True, width=None if sys.stderr.isatty() else 200, emoji=False)

HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home", help="node folder (default: $FADES_HOME or ~/.fades)", show_default=False
    ),
]
ControllerOpt = Annotated[
    str,
    typer.Option(
        "--controller", envvar="FADES_CONTROLLER", help="controller URL ($FADES_CONTROLLER)"
    ),
]
TokenOpt = Annotated[
    str, typer.Option("--token", envvar="FADES_TOKEN", help="bearer token ($FADES_TOKEN)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def home_dir(home: Path | None) -> Path:
    """The node folder's path (``--home``, else ``$FADES_HOME`` or ``~/.fades``), unchecked."""
    return home.expanduser() if home is not None else paths.home()


def node_folder(
    home: Path | None, *, create: bool = False, what: str = "node", option: str = "--home"
) -> Path:
    """The node folder a command works on, checked before anything is read or written.

    A command that reads or changes an existing node (``create=False``) refuses a folder
    that does not exist rather than making an empty node at a mistyped path; one that sets
    a node up (``keys generate``, ``keys trust``, ``data generate``, ``data load``) makes
    it, parents included. A path that is a file, or a folder that cannot be made, is one
    :class:`~fades.errors.NodeFolderError` line.
    """
    from fades.errors import NodeFolderError

    h = home_dir(home)
    where = option if home is not None else "$FADES_HOME" if os.environ.get("FADES_HOME") else ""
    named = f"{h} ({where})" if where else str(h)
    if h.exists() and not h.is_dir():
        raise NodeFolderError(f"{named} is a file, not a {what} folder: give a folder")
    if h.is_dir():
        return h
    if not create:
        raise NodeFolderError(
            f"no node at {named}; create one with 'fades keys generate --home {h}' "
            "(or fix the path)"
        )
    try:
        h.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NodeFolderError(
            f"cannot create the {what} folder {named}: {exc.strerror or exc}"
        ) from None
    return h


def output_file(out: Path, option: str = "--out") -> Path:
    """``out`` if a file can be written there: its folder exists and it is not a folder."""
    from fades.errors import UsageError

    out = out.expanduser()
    if out.is_dir():
        raise UsageError(f"{option} {out} is a folder: give a file name")
    if not out.parent.is_dir():
        raise UsageError(
            f"{option} {out}: the folder {out.parent} does not exist; create it or pick another"
        )
    return out


def debug_enabled() -> bool:
    return os.environ.get("FADES_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def _connection_failure(exc: BaseException) -> str | None:
    """The URL that could not be reached, if ``exc`` is a failure to connect."""
    import httpx

    if isinstance(exc, httpx.TransportError):
        try:
            return str(exc.request.url)
        except RuntimeError:  # no request attached
            return "the server"
    if isinstance(exc, ConnectionError):
        return "the server"
    return None


def _problems(exc: TaskValidationError) -> None:
    """A heading line, then each problem once on its own line (not also joined on the first)."""
    text = str(exc)
    first = f"{exc.problems[0][0]}: "
    head = text[: text.find(first)].rstrip(": ;") if first in text else "invalid"
    more = re.search(r"and (\d+) more problems?$", text)
    total = len(exc.problems) + (int(more.group(1)) if more else 0)
    err.print(
        f"[bold red]error[/] ({markup(exc.kind)}): {markup(head or 'invalid', oneline=True)} "
        f"({total} problems):",
        soft_wrap=True,
    )
    for field, reason in exc.problems[:20]:
        err.print(f"  - {markup(field, oneline=True)}: {markup(reason, oneline=True)}")
    if total > 20:
        err.print(f"  - and {total - 20} more")


def _os_error(exc: OSError) -> str:
    """``strerror: 'file'`` without the ``[Errno N]`` prefix."""
    if exc.strerror and exc.filename is not None:
        return markup(f"{exc.strerror}: {os.fsdecode(exc.filename)!r}", oneline=True)
    return markup(exc, oneline=True)


def report(exc: BaseException) -> int:
    """Print ``exc`` as one line on stderr and return the exit status for it."""
    if isinstance(exc, FadesError):
        if isinstance(exc, TaskValidationError) and len(exc.problems) > 1:
            _problems(exc)
        else:
            err.print(f"[bold red]error[/] ({markup(exc.kind)}): {markup(exc)}", soft_wrap=True)
        status = 2
    elif (url := _connection_failure(exc)) is not None:
        err.print(
            f"[bold red]error[/] (connection): cannot reach {markup(url, oneline=True)}: "
            f"{markup(exc, oneline=True)}",
            soft_wrap=True,
        )
        status = 2
    elif isinstance(exc, (FileExistsError, FileNotFoundError, PermissionError)):
        kind = markup(type(exc).__name__)
        err.print(f"[bold red]error[/] ({kind}): {_os_error(exc)}", soft_wrap=True)
        status = 2
    else:
        err.print(
            f"[bold red]error[/] (unexpected {markup(type(exc).__name__)}): "
            f"{markup(exc, oneline=True)}",
            soft_wrap=True,
        )
        if not debug_enabled():
            err.print("  this is a bug in fades; rerun with --debug (or FADES_DEBUG=1) for details")
        status = 1
    if debug_enabled():
        err.print(markup("".join(traceback.format_exception(exc)), 64 * 1024), soft_wrap=True)
    return status


@contextmanager
def progress_bar() -> Iterator[tuple[Callable[[Any, int, int], None], Any]]:
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
def spinner(text: str) -> Iterator[None]:
    with Progress(SpinnerColumn(), TextColumn(text), TimeElapsedColumn(), console=console) as p:
        p.add_task(text, total=None)
        yield
