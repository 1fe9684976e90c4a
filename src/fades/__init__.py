"""fades: fine-grained edge offloading of signed WebAssembly functions to IoT data.

The names a user needs, importable from ``fades`` directly::

    from fades import Task, parse_task, Node, FadesClient, Outcome, SigningKey, build_function

Tasks (:class:`Task`, :func:`parse_task`, :func:`load_task`), a node on this machine
(:class:`Node`), the controller's HTTP client (:class:`FadesClient`), how a task ended
(:class:`Outcome`), building and signing functions (:class:`SigningKey`,
:func:`build_function`, :func:`build_runtime`, :class:`Artifact`), and the error tree's root
(:class:`FadesError`) with its main branches. Each name is imported on first use, so
``import fades`` stays cheap (no wasmtime, numpy, HTTP or NATS until they are needed).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_LAZY: dict[str, str] = {
    "Task": "fades.task",
    "parse_task": "fades.task",
    "load_task": "fades.task",
    "Node": "fades.node",
    "FadesClient": "fades.client",
    "Outcome": "fades.outcome",
    "SigningKey": "fades.functions.keys",
    "Artifact": "fades.functions.artifact",
    "build_function": "fades.functions.build",
    "build_runtime": "fades.functions.build",
    "FadesError": "fades.errors",
    "TaskError": "fades.errors",
    "TaskValidationError": "fades.errors",
    "ArtifactError": "fades.errors",
    "SignatureError": "fades.errors",
    "SandboxError": "fades.errors",
    "MemoryLimitExceeded": "fades.errors",
    "TimeLimitExceeded": "fades.errors",
    "AccessDenied": "fades.errors",
    "FabricError": "fades.errors",
    "ControllerError": "fades.errors",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from fades.client import FadesClient as FadesClient
    from fades.errors import AccessDenied as AccessDenied
    from fades.errors import ArtifactError as ArtifactError
    from fades.errors import ControllerError as ControllerError
    from fades.errors import FabricError as FabricError
    from fades.errors import FadesError as FadesError
    from fades.errors import MemoryLimitExceeded as MemoryLimitExceeded
    from fades.errors import SandboxError as SandboxError
    from fades.errors import SignatureError as SignatureError
    from fades.errors import TaskError as TaskError
    from fades.errors import TaskValidationError as TaskValidationError
    from fades.errors import TimeLimitExceeded as TimeLimitExceeded
    from fades.functions.artifact import Artifact as Artifact
    from fades.functions.build import build_function as build_function
    from fades.functions.build import build_runtime as build_runtime
    from fades.functions.keys import SigningKey as SigningKey
    from fades.node import Node as Node
    from fades.outcome import Outcome as Outcome
    from fades.task import Task as Task
    from fades.task import load_task as load_task
    from fades.task import parse_task as parse_task


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fades' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
