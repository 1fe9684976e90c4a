"""The controller: node registry, function repository, placement and the HTTP API.

:class:`Controller` (in :mod:`fades.controller.service`) is imported on first use, so that
light users of this package (the HTTP client's error classes) do not load NATS and wasmtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fades.controller.service import Controller

__all__ = ["Controller"]


def __getattr__(name: str) -> Any:
    if name == "Controller":
        from fades.controller.service import Controller

        return Controller
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
