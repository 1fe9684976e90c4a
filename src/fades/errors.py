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
    ├── PipelineError             pipelines (spec, planning, queues)
    ├── StateError                stateful functions (capture, checkpoints, fencing, moves)
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


# --- functions (NAME=functions): artifact rules, builds, the node's function store ------------
class ArtifactRejected(ArtifactFormatError):
    """A well-formed artifact breaks a rule: its name, a manifest field's size or type, or a
    payload that does not match its kind. ``field`` names what; ``line`` where there is one."""

    def __init__(self, message: str, *, field: str | None = None, **ctx: Any) -> None:
        super().__init__(message, **ctx)
        self.field = field


class FunctionSourceError(BuildError):
    """``fades fn build`` was given source it cannot build: unreadable, too large, not UTF-8,
    a syntax error or an expression nested too deeply. ``line`` where there is one."""


class ArtifactQuarantined(ArtifactError):
    """An artifact file on a node failed its checks at load and was moved to quarantine."""


# --- taskinput: bounded task input and retrieval ---------------------------------------------
class InputTooLarge(BrokerError):
    """A task's data operations select more than a node limit allows (checked before fetching).

    ``limit`` names the limit (``max_data_ops``, ``max_rows``, ``max_input_bytes`` or
    ``memory_mib``) and ``value`` is its value.
    """

    def __init__(self, message: str, *, limit: str, value: int, **ctx: Any) -> None:
        super().__init__(message, limit=limit, **ctx)
        self.limit = limit
        self.value = value


class RetrievalTimeLimitExceeded(BrokerError):
    """Fetching a task's data took longer than the node's retrieval time limit; it was stopped."""

    def __init__(self, seconds: float, **ctx: Any) -> None:
        super().__init__(
            f"data retrieval exceeded the node limit retrieval_seconds={seconds:g}; it was stopped",
            **ctx,
        )
        self.seconds = seconds


# --- taskinput: persistent tasks and empty selections ----------------------------------------
class TaskCancelled(OrchestratorError):
    """The task was cancelled (by ``cancel``, or because the one-shot run that started it
    ended) before it finished; a persistent task stops after its current invocation."""


class NoData(BrokerError):
    """A data operation selected no rows (and the operation does not say ``allow_empty``)."""


# --- sandbox (NAME=sandbox): what comes out of a sandbox, and the worker processes ------------
class ResultTooLarge(SandboxError):
    """A function's result (or error report) is larger than the node's bound."""

    def __init__(self, limit_bytes: int, size: int | None = None, **ctx: Any) -> None:
        got = f" ({size} bytes)" if size is not None else ""
        super().__init__(
            f"result size limit {limit_bytes} bytes exceeded{got}; return less data", **ctx
        )
        self.limit_bytes = limit_bytes


class BadFunctionOutput(SandboxError):
    """A function handed the host something malformed (not JSON, too deep, NaN, wrong types,
    a core module that does not honour its ABI)."""


# --- controller (NAME=controller) --------------------------------------------------------------
class DeadlineMissed(OrchestratorError):
    """A task's deadline passed before it could start."""


class DispatchFailed(ControllerError):
    """The controller could not hand a recorded task to its node (it fails with this reason)."""


class ControllerUnreachable(FadesError):
    """The client could not reach the controller (connection refused, reset, timed out)."""


class BadRequest(ControllerError):
    """A malformed HTTP request: unreadable body, too deep, wrong type of a parameter."""


class PayloadTooLarge(ControllerError):
    """A request body (a task, an upload) exceeds the controller's limit for it."""


class UnsupportedContentType(ControllerError):
    """A request body sent with a content type the route does not take."""


class NameTaken(Forbidden):
    """The function name belongs to another tenant (the first to publish it)."""


class RollbackRefused(ControllerError):
    """An upload would make an older version of a function current again."""


# --- controller (wave 2) ---------------------------------------------------------------------
class TaskNotCancellable(ControllerError):
    """A cancel request for a task that already ended, or that cannot be stopped where it runs
    (HTTP 409)."""


class SignerNotTrusted(ControllerError):
    """An upload signed by a key that none of the nodes that are up trusts (HTTP 422);
    ``context`` holds ``signer`` and ``nodes``."""


# --- cli ---


class MissingExtra(FadesError):
    """A command needs an optional dependency (matplotlib, scipy) that is not installed."""


# --- pipelines -------------------------------------------------------------------------------
class PipelineError(FadesError):
    """A pipeline could not be accepted, planned or run."""


class PipelineValidationError(PipelineError, TaskValidationError):
    """A malformed pipeline spec. ``problems`` lists ``(field, reason)`` pairs; a field inside
    a stage is named ``stages.<stage name>.<field>``."""


class PipelineNotFound(PipelineError):
    """No pipeline (or run) with that name is known (HTTP 404)."""


class Unplaceable(PipelineError, NoPlacement):
    """A stage no node that is up can serve (HTTP 422); ``context['stage']`` names it."""


class QueueFull(PipelineError):
    """A pipeline's bundle queue is at its bound and its policy is ``refuse``."""


# --- stateful functions ----------------------------------------------------------------------
class StateError(FadesError):
    """A stateful task's state could not be captured, stored, restored or moved."""


class StateNotCapturable(StateError):
    """A global of a stateful function holds something that cannot be checkpointed (a
    generator, a lambda, an open file); the message names the global."""


class CheckpointRejected(StateError):
    """A checkpoint that fails its integrity check, or was written by another function
    (digest mismatch), is refused on restore."""


class Fenced(StateError):
    """A stale instance tried to write a checkpoint after the task moved (its fencing token,
    the bucket revision, is no longer current)."""


class MigrationFailed(StateError):
    """A migration could not complete; the task keeps running where it was."""


class StateEnded(StateError):
    """The stateful task already ended (on the node named in the message): its record in
    the checkpoint store says so, and no instance may claim it again (a failover that came
    after the task finished elsewhere)."""


# --- pipelines: controller side (NAME=pctl) ----------------------------------------------------
class PipelineExists(PipelineError):
    """A pipeline of that name is active; cancel it first or resubmit with ``replace``
    (HTTP 409)."""


# --- devices and actuators (NAME=factory) ------------------------------------------------------
class DeviceError(FadesError):
    """A device declaration, an actuator command or its audit went wrong."""


class DeviceSpecError(DeviceError):
    """A node folder's ``devices.yaml`` is malformed; the message names the entry and field."""


class UnknownDevice(DeviceError, UnknownNode):
    """No device of that name is declared by that node (HTTP 404)."""


class UnknownCommand(DeviceError, BadRequest):
    """The device does not accept that command; the message names the allowed ones
    (HTTP 400)."""


class CommandForbidden(DeviceError, Forbidden):
    """The tenant may not command that device (HTTP 403); the refusal is audited."""


# --- the command line (NAME=trial) -------------------------------------------------------------
class UsageError(FadesError):
    """A command line that cannot run as typed: an unknown command or option, a missing
    argument, a value out of range. The message names the command, what to fix and where
    its help is."""


# --- the command line: node folders (NAME=clifix) ---------------------------------------------
class NodeFolderError(FadesError):
    """``--home`` (or ``$FADES_HOME``) names no usable node folder: a file, a folder that
    cannot be created, or, for a command that reads a node, a folder that does not exist."""


# --- the command line: a cluster folder in use (NAME=trial6) ---------------------------------
class ClusterInUse(FadesError):
    """``fades up`` (or the demo) on a folder from which a running cluster is served; the
    message names the holder's pid."""


# --- node names (NAME=lead) --------------------------------------------------------------------
class NodeNameInUse(FadesError):
    """A node agent started under the name of a node that is still running: its registry entry
    kept being renewed while the new one watched it. The message names the running one."""


# --- node storage (NAME=hostile) ---------------------------------------------------------------
class NodeStorageFull(FadesError):
    """A node's SQLite file could not be written: the disk is full, or the process's file-size
    limit is reached. The message names the file; nothing was recorded by that write."""
