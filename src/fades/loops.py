"""How the long-running processes (the controller, a node agent) run their event loop.

uvloop (the asyncio event loop written in C over libuv; the same API) when it is installed,
unless ``FADES_UVLOOP=off``; else asyncio's own. Measured on the 2-core machine here under
a batch of tasks: about 15% less CPU per task in the controller and a third less while
idle (``benchmarks/bench_controller.py``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any

#: the environment switch: ``off`` (or 0/no/false) runs asyncio's own loop
ENV = "FADES_UVLOOP"


def runner() -> Callable[[Coroutine[Any, Any, None]], None]:
    """``uvloop.run`` or ``asyncio.run`` (see the module docstring)."""
    if os.environ.get(ENV, "on").strip().lower() not in ("off", "0", "no", "false"):
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run
    return asyncio.run
