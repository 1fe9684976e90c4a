"""Usage errors of the ``fades`` command line as one line, through the project's error path.

Typer reports a bad command line (an unknown command or option, a missing argument, a value
out of range) in a boxed panel with the whole usage. :func:`usage_error` turns such an error
into a :class:`fades.errors.UsageError` whose message is one line: the command, what is
wrong (with the value given, when there is one) and where its help is::

    error (UsageError): fades up: --controllers must be at least 1 (got '0'); see 'fades up --help'

:func:`command_path` names the command when the error carries no context (a
``typer.BadParameter`` raised inside a command's body).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from typer import _click as tclick

from fades.errors import UsageError

__all__ = ["command_path", "usage_error"]

# Typer coerces values with pydantic; its messages start "Input should be ..."
_PYDANTIC_TAIL = re.compile(r", unable to parse (string|input) as an? \w+$")
_MAX_VALUE = 80


def _value_given(exc: BaseException) -> Any:
    """The value pydantic refused (typer chains the ValidationError), if any."""
    cause = exc.__cause__
    errors = getattr(cause, "errors", None)
    if not callable(errors):
        return None
    try:
        first = errors()[0]
    except Exception:  # any failure: no value to show
        return None
    return first.get("input") if isinstance(first, dict) else None


def _shown(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else repr(str(value))
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 4] + "...'"


def _hint(exc: tclick.exceptions.BadParameter) -> str | None:
    if exc.param_hint is not None:
        hint = exc.param_hint
        if isinstance(hint, str):
            return hint.strip("'\"")
        return " / ".join(h.strip("'\"") for h in hint)
    if exc.param is not None:
        if exc.param.param_type_name == "argument":
            return (exc.param.name or "").upper()
        return " / ".join(exc.param.opts) or exc.param.name
    return None


def _message(exc: tclick.exceptions.UsageError) -> str:
    """What is wrong, as a phrase without the boxed panel's framing."""
    if isinstance(exc, tclick.exceptions.MissingParameter):
        param = exc.param
        if param is None:
            return _lower(exc.format_message().rstrip("."))
        kind = exc.param_type or param.param_type_name
        text = f"missing {kind} {_hint(exc)}"
        envvar = getattr(param, "envvar", None)
        if isinstance(envvar, str):
            text += f" (or set {envvar})"
        return text
    if isinstance(exc, tclick.exceptions.BadParameter):
        text = _PYDANTIC_TAIL.sub("", exc.message.strip().rstrip("."))
        text = re.sub(r"^Input should be ", "must be ", text)
        text = text.replace("greater than or equal to", "at least")
        text = text.replace("less than or equal to", "at most")
        value = _value_given(exc)
        if value is not None:
            text += f" (got {_shown(value)})"
        hint = _hint(exc)
        if hint and not text.startswith(hint):
            return f"{hint}: {text}" if not text.startswith("must") else f"{hint} {text}"
        return text
    text = exc.format_message().strip()
    text = re.sub(r"\. Did you mean ('[^']*')\?$", r" (did you mean \1?)", text)
    return _lower(text.rstrip("."))


def _lower(text: str) -> str:
    """``No such option`` as ``no such option``: the phrase follows ``fades up: ``."""
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def command_path(root: tclick.Command, args: Sequence[str], prog: str = "fades") -> str:
    """The deepest (sub)command that ``args`` name below ``root``, as ``fades up``."""
    path = [prog]
    cmd: tclick.Command | None = root
    for token in args:
        if token.startswith("-"):
            continue
        commands = getattr(cmd, "commands", None)
        if not isinstance(commands, dict) or token not in commands:
            break
        cmd = commands[token]
        path.append(token)
    return " ".join(path)


def usage_error(exc: tclick.exceptions.UsageError, fallback_path: str) -> UsageError:
    """``exc`` as one line naming the command and its help."""
    path = exc.ctx.command_path if exc.ctx is not None else fallback_path
    text = " ".join(_message(exc).split())  # one line, whatever the message held
    return UsageError(f"{path}: {text}; see '{path} --help'", command=path)
