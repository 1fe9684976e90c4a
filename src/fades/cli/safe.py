"""Text that came from a function, a task, a node or the controller, made safe to print.

Everything such a party says (a result, an error message, a traceback, a log, a name) is
untrusted: it may hold rich markup (``[/bold]`` crashes the renderer, ``[link=...]`` forges a
link), terminal escape sequences (ANSI colours, OSC titles and hyperlinks, cursor moves),
other C0/C1 control characters, bidirectional overrides that make text read differently
from what it is, or simply be enormous. :func:`clean` bounds it first (so a 50 MB message
costs nothing to render), then replaces every such character with a visible ``\\xNN`` or
``\\uNNNN`` escape; :func:`markup` additionally escapes rich markup so the text can be
embedded in a markup string. ``--json`` output does not need this: :func:`json.dumps`
escapes control characters and the output is not rendered by rich.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rich.markup import escape

#: The longest text shown for one untrusted field (a message, a name, a log line...).
MAX_TEXT = 4096
#: The most of a result that is shown; the full value is available with ``--json``.
MAX_RESULT = 64 * 1024
#: The most lines of a result, a traceback or a log that are shown.
MAX_LINES = 40

# C0 controls except \t and \n, DEL, C1 controls (includes the 8-bit CSI and OSC), the
# bidirectional marks, embeddings, overrides and isolates, and the line/paragraph separators.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(value: object, limit: int = MAX_TEXT, *, oneline: bool = False) -> str:
    """``value`` as plain text that cannot drive the terminal, at most ``limit`` characters.

    Control characters other than newline and tab become visible escapes; with ``oneline``
    newlines and tabs do too. Text longer than ``limit`` is cut and says by how much.
    """
    text = value if isinstance(value, str) else str(value)
    extra = len(text) - limit
    if extra > 0:
        text = text[:limit]
    text = _UNSAFE.sub(_visible, text)
    if oneline:
        text = text.replace("\n", "\\n").replace("\t", "\\t")
    if extra > 0:
        text += f" … ({extra:,} more characters)"
    return text


def markup(value: object, limit: int = MAX_TEXT, *, oneline: bool = False) -> str:
    """:func:`clean`, then escaped so that rich prints it literally inside a markup string."""
    return escape(clean(value, limit, oneline=oneline))


def tail(text: str, lines: int = MAX_LINES, limit: int = MAX_RESULT) -> str:
    """The last ``lines`` lines of ``text`` (a traceback, a log), cleaned and bounded."""
    if len(text) > limit:
        text = text[-limit:]
    parts = text.splitlines()
    head = f"… ({len(parts) - lines} earlier lines)\n" if len(parts) > lines else ""
    return head + clean("\n".join(parts[-lines:]), limit)


def result_text(value: Any, limit: int = MAX_RESULT, lines: int = MAX_LINES) -> str:
    """A result as indented JSON, cleaned, cut at ``limit`` characters and ``lines`` lines.

    A cut result ends with a note naming its full size and ``--json``.
    """
    try:
        text = json.dumps(value, indent=1, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        text = f"<a {type(value).__name__} that is not plain JSON; see --json>"
    size = len(text)
    shown = text[:limit]
    parts = shown.splitlines()
    cut = size > limit or len(parts) > lines
    body = clean("\n".join(parts[:lines]), limit)
    if cut:
        body += f"\n  … (result is {size:,} characters; the full value: --json)"
    return body
