"""What a Python function may import: the one list the build check and the runtime share.

:data:`AVAILABLE` is the standard library that makes sense in a sandbox with no files (other
than its read-only input), no sockets, no processes and no threads, plus the fades SDK
(``fades_sdk``). The Python runtime (CPython 3.14 for WASI, built by componentize-py) bundles
only the modules its guest imports when it is built, so the runtime imports exactly
:data:`AVAILABLE`; ``fades fn build`` refuses a function importing anything else
(:func:`check_imports`), naming the module, the line and, for :data:`UNAVAILABLE` modules,
why the sandbox does not have it.

Every name in :data:`AVAILABLE` was imported inside CPython 3.14/WASI (the componentize-py
0.25 build); the modules that do not even import there are in :data:`UNAVAILABLE` as "not
built for WASI".

This module imports only ``ast`` and ``sys`` at load, so that runtime build code can use it
on its own.
"""

from __future__ import annotations

import ast
import sys

__all__ = [
    "AVAILABLE",
    "SDK",
    "STATE_SDK",
    "UNAVAILABLE",
    "check_imports",
    "unavailable_reason",
]

#: The fades SDK module as the guest imports it (``fades.guest.fades_sdk`` on the host).
SDK = "fades_sdk"
#: The step-graph helper for stateful functions (``fades.guest.fades_state``; docs/state.md).
STATE_SDK = "fades_state"

#: Modules a function may import (a plain tuple of importable names, sorted; submodules that
#: must be imported on their own are listed by their dotted name).
AVAILABLE: tuple[str, ...] = (
    "__future__",
    "abc",
    "array",
    "base64",
    "binascii",
    "bisect",
    "builtins",
    "calendar",
    "cmath",
    "codecs",
    "collections",
    "collections.abc",
    "colorsys",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "enum",
    SDK,
    STATE_SDK,
    "fnmatch",
    "fractions",
    "functools",
    "graphlib",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "importlib",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "keyword",
    "logging",
    "math",
    "numbers",
    "operator",
    "pprint",
    "random",
    "re",
    "reprlib",
    "secrets",
    "shlex",
    "statistics",
    "string",
    "struct",
    "sys",
    "textwrap",
    "time",
    "traceback",
    "types",
    "typing",
    "unicodedata",
    "urllib.parse",
    "uuid",
    "warnings",
    "weakref",
    "zlib",
    "zoneinfo",
)

_NET = "no network in the sandbox (no sockets)"
_PROC = "no processes or signals in the sandbox"
_THREAD = "no threads in the sandbox (a function runs on one thread)"
_FILES = "no file system in the sandbox (its only file is the read-only input)"
_WASI = "not built for WebAssembly (WASI): CPython 3.14/WASI lacks its native library"
_TERM = "no terminal, debugger or test runner in the sandbox; test functions on the host"
_HOST = "the host's fades package is not in the sandbox; import the SDK as 'fades_sdk'"

#: Modules a function may not import, and why (a submodule inherits its package's reason).
UNAVAILABLE: dict[str, str] = {
    **dict.fromkeys(
        ("socket", "_socket", "ssl", "select", "selectors", "asyncio", "http", "urllib.request",
         "urllib.robotparser", "ftplib", "smtplib", "imaplib", "poplib", "socketserver",
         "xmlrpc", "webbrowser", "wsgiref"),
        _NET,
    ),
    **dict.fromkeys(("subprocess", "multiprocessing", "signal", "pty", "concurrent"), _PROC),
    **dict.fromkeys(("threading", "_thread", "queue", "sched"), _THREAD),
    **dict.fromkeys(
        ("os", "posix", "pathlib", "shutil", "tempfile", "glob", "fileinput", "filecmp",
         "sqlite3", "dbm", "shelve", "mimetypes", "zipfile", "tarfile", "zipimport"),
        _FILES,
    ),
    **dict.fromkeys(
        ("bz2", "lzma", "ctypes", "mmap", "fcntl", "termios", "tty", "pwd", "grp", "resource",
         "readline", "curses", "tkinter", "turtle", "compression.zstd"),
        _WASI,
    ),
    **dict.fromkeys(
        ("pdb", "code", "codeop", "cProfile", "profile", "tracemalloc", "faulthandler",
         "unittest", "doctest", "idlelib", "timeit", "trace"),
        _TERM,
    ),
    "fades": _HOST,
    "pickle": "not bundled: it can build any object from bytes; return and accept JSON",
    "sys.monitoring": "not bundled: no debugger or profiler in the sandbox",
}  # fmt: skip

_AVAILABLE = frozenset(AVAILABLE)
_PARENTS = frozenset(n.rsplit(".", i)[0] for n in AVAILABLE for i in range(1, n.count(".") + 1))
_GUARDS = frozenset(("ImportError", "ModuleNotFoundError", "Exception", "BaseException"))


def _prefixes(module: str) -> list[str]:
    """``a.b.c`` -> ``["a.b.c", "a.b", "a"]`` (longest first)."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def unavailable_reason(module: str) -> str | None:
    """Why ``module`` cannot be imported in the sandbox, or None if it can.

    A module is importable when it, or a package holding it, is in :data:`AVAILABLE` (or it
    is a package of a listed submodule, such as ``urllib`` for ``urllib.parse``), unless a
    more specific entry of :data:`UNAVAILABLE` says otherwise (``urllib.request``).
    """
    if not module or any(not p.isidentifier() for p in module.split(".")):
        return "not a module name"
    for prefix in _prefixes(module):
        if prefix in UNAVAILABLE:
            return UNAVAILABLE[prefix]
        if prefix in _AVAILABLE:
            return None
    if module in _PARENTS:
        return None
    top = module.split(".")[0]
    # a sibling of a listed submodule (urllib.error), a private or another standard module
    if top in _PARENTS or top in sys.stdlib_module_names or top.startswith("_"):
        return "not bundled in the fades Python runtime (see docs/functions.md)"
    return (
        "third-party packages are not in the sandbox (only the standard library listed in "
        "docs/functions.md, and fades_sdk)"
    )


def _literal(call: ast.Call) -> str | None:
    """The module name of ``__import__('x')`` / ``importlib.import_module('x')``, if literal."""
    func = call.func
    named = (isinstance(func, ast.Name) and func.id in ("__import__", "import_module")) or (
        isinstance(func, ast.Attribute) and func.attr in ("__import__", "import_module")
    )
    if not named or not call.args:
        return None
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    return None


def _guarded(handlers: list[ast.ExceptHandler]) -> bool:
    """A ``try`` whose handlers catch a failed import (an optional import)."""
    for h in handlers:
        if h.type is None:
            return True
        types = h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]
        for t in types:
            name = (
                t.id if isinstance(t, ast.Name) else t.attr if isinstance(t, ast.Attribute) else ""
            )
            if name in _GUARDS:
                return True
    return False


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST) -> list[tuple[str, int]]:
    """Every (module, line) ``node`` imports, except optional and type-checking-only ones."""
    found: list[tuple[str, int]] = []
    stack: list[ast.AST] = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Try | ast.TryStar) and _guarded(n.handlers):
            stack.extend([*n.handlers, *n.orelse, *n.finalbody])  # the body may fail
            continue
        if isinstance(n, ast.If) and _type_checking(n.test):
            stack.extend(n.orelse)
            continue
        if isinstance(n, ast.Import):
            found.extend((a.name, n.lineno) for a in n.names)
        elif isinstance(n, ast.ImportFrom):
            if n.level:
                found.append(("." * n.level + (n.module or ""), n.lineno))
            elif n.module:
                found.append((n.module, n.lineno))
        elif isinstance(n, ast.Call):
            name = _literal(n)
            if name is not None:
                found.append((name, n.lineno))
        stack.extend(ast.iter_child_nodes(n))
    return sorted(found, key=lambda f: f[1])


def check_imports(tree: ast.AST, *, where: str = "source") -> None:
    """Refuse a function that imports a module the sandbox does not have (the first one).

    Imports inside a ``try`` that catches ``ImportError`` (optional imports) and under
    ``if TYPE_CHECKING:`` are not checked; an import whose name is computed at run time
    cannot be.

    Raises:
        FunctionSourceError: ``where:LINE: imports 'MODULE', ...: WHY``; ``context`` has
            ``line`` and ``module``.
    """
    from fades.errors import FunctionSourceError

    for module, line in _imports(tree):
        if module.startswith("."):
            why = "a function is one file; there is no package to import from"
        else:
            found = unavailable_reason(module)
            if found is None:
                continue
            why = found
        raise FunctionSourceError(
            f"{where}:{line}: imports {module!r}, which a fades function cannot use: {why}",
            line=line,
            module=module,
        )
