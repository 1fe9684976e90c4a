"""The one exception tree of fades.

Every error a user can meet derives from :class:`FadesError`, so ``except FadesError`` catches
everything that fades raises on purpose, while a plain bug still surfaces as itself::

    FadesError
    ├── TaskError                 the task itself is wrong
    │   ├── TaskValidationError   malformed task (names the field and the reason)
    │   └── TaskNotFound
    ├── ArtifactError             function artifacts
    │   ├── ArtifactFormatError   not a fades artifact / corrupt
    │   ├── SignatureError        unsigned, tampered, or signed by an untrusted key
    │   └── BuildError            could not build an artifact from source
    ├── SandboxError              the function ran and failed
    │   ├── MemoryLimitExceeded   "memory limit N MiB exceeded"
    │   ├── TimeLimitExceeded     CPU/time budget exhausted
    │   ├── SandboxViolation      tried to use a capability it was not granted
    │   └── FunctionCrashed       trapped or raised inside the sandbox
    ├── BrokerError               data retrieval
    │   ├── AccessDenied          the tenant's policy does not cover what was asked
    │   ├── ConnectorError        a connector failed or is unknown
    │   └── DatasetError          a dataset could not be loaded or generated
    ├── OrchestratorError         the node itself (capacity, shutdown, persistence)
    ├── PlacementError            the placement engine (infeasible instance, bad config)
    ├── FabricError               the NATS fabric (server start, connection, transfer)
    │   └── NodeUnavailable       a node did not answer or is marked down
    └── ControllerError           the controller refused a request (HTTP 4xx/503)
        ├── Unauthorized          missing or unknown bearer token               401
        ├── Forbidden             the task's tenant is not the token's tenant   403
        ├── UnknownNode           no node of that name ever registered          404
        ├── DuplicateTask         a task with that id was already submitted     409
        └── NoPlacement           no node that is up holds the data a task selects  422

Errors carry context (task id, tenant, node) as attributes so that logs and API replies can
name what failed without parsing the message.
"""

from __future__ import annotations

from typing import Any


class FadesError(Exception):
    """Root of every error fades raises on purpose."""

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context: dict[str, Any] = {k: v for k, v in context.items() if v is not None}

    def __str__(self) -> str:
        return self.message

    @property
    def kind(self) -> str:
        """Short machine-readable name of the error class, e.g. ``"MemoryLimitExceeded"``."""
        return type(self).__name__


# --- tasks -----------------------------------------------------------------------------------
class TaskError(FadesError):
    """The task is wrong or unknown."""


class TaskValidationError(TaskError):
    """A malformed task. ``problems`` lists ``(field, reason)`` pairs."""

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None, **ctx: Any):
        super().__init__(message, **ctx)
        self.problems = problems or []


class TaskNotFound(TaskError):
    """No task with that id is known to the node."""


# --- artifacts -------------------------------------------------------------------------------
class ArtifactError(FadesError):
    """A function artifact could not be used."""


class ArtifactFormatError(ArtifactError):
    """The bytes are not a well-formed fades artifact."""


class SignatureError(ArtifactError):
    """The artifact is unsigned, was tampered with, or is signed by a key the node distrusts."""


class BuildError(ArtifactError):
    """Building an artifact from source failed."""


# --- sandbox ---------------------------------------------------------------------------------
class SandboxError(FadesError):
    """The function failed inside its sandbox."""


class MemoryLimitExceeded(SandboxError):
    """The function needed more linear memory than its cap."""

    def __init__(self, limit_mib: int, **ctx: Any) -> None:
        super().__init__(f"memory limit {limit_mib} MiB exceeded", **ctx)
        self.limit_mib = limit_mib


class TimeLimitExceeded(SandboxError):
    """The function ran past its CPU/time budget and was interrupted."""

    def __init__(self, budget_ms: int, **ctx: Any) -> None:
        super().__init__(f"time limit {budget_ms} ms exceeded; the function was interrupted", **ctx)
        self.budget_ms = budget_ms


class SandboxViolation(SandboxError):
    """The function tried to use a capability (file, socket, ...) it was not granted."""


class FunctionCrashed(SandboxError):
    """The function trapped or raised an exception."""


# --- broker ----------------------------------------------------------------------------------
class BrokerError(FadesError):
    """Data retrieval failed."""


class AccessDenied(BrokerError):
    """The tenant's access policy does not cover the data the task asked for."""


class ConnectorError(BrokerError):
    """A connector is unknown, misconfigured, or failed while fetching."""


class DatasetError(BrokerError):
    """A dataset could not be generated or loaded."""


# --- node / placement ------------------------------------------------------------------------
class OrchestratorError(FadesError):
    """The node could not accept or run work (capacity, shutdown, persistence)."""


class PlacementError(FadesError):
    """The placement engine was given an impossible instance or a bad configuration."""


# --- fabric / controller ---------------------------------------------------------------------
class FabricError(FadesError):
    """The NATS fabric could not be started, reached or used."""


class NodeUnavailable(FabricError):
    """A node did not answer, or the registry has it marked down."""


class FabricConflict(FabricError):
    """A key-value write lost a race: the key exists, or changed since the given revision."""


class ControllerError(FadesError):
    """The controller refused a request (the HTTP API maps these to 4xx answers)."""


class Unauthorized(ControllerError):
    """No bearer token, or a token the controller does not know."""


class NoPlacement(ControllerError):
    """No node that is up holds the data a task selects."""


class Forbidden(ControllerError):
    """The request acts for a tenant other than the one its token belongs to."""


class UnknownNode(ControllerError):
    """No node of that name is in the registry."""


class DuplicateTask(ControllerError):
    """A task with this id was already submitted (task ids are unique across tenants)."""


def error_class(kind: str | None, default: type[FadesError] = FadesError) -> type[FadesError]:
    """The error class named ``kind`` (an error's ``.kind`` from the wire), else ``default``."""
    cls = globals().get(kind or "")
    if isinstance(cls, type) and issubclass(cls, FadesError):
        return cls
    return default


# --- cli ---


class MissingExtra(FadesError):
    """A command needs an optional dependency (matplotlib, scipy) that is not installed."""
