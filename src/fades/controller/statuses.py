"""HTTP status and JSON body of every refusal: one table for every router of the API."""

from __future__ import annotations

from typing import Any

from fades.errors import (
    ArtifactError,
    ArtifactFormatError,
    BadRequest,
    ControllerError,
    DuplicateTask,
    FabricError,
    FadesError,
    Forbidden,
    NodeUnavailable,
    NoPlacement,
    PayloadTooLarge,
    PipelineExists,
    PipelineNotFound,
    PipelineValidationError,
    QueueFull,
    RollbackRefused,
    SignatureError,
    SignerNotTrusted,
    TaskNotCancellable,
    TaskNotFound,
    TaskValidationError,
    Unauthorized,
    UnknownNode,
    UnsupportedContentType,
)

#: HTTP status per error class (the first match in this order wins)
STATUS: list[tuple[type[FadesError], int]] = [
    (PipelineValidationError, 422),
    (PipelineNotFound, 404),
    (PipelineExists, 409),
    (QueueFull, 429),
    (TaskValidationError, 400),
    (BadRequest, 400),
    (Unauthorized, 401),
    (Forbidden, 403),
    (TaskNotFound, 404),
    (UnknownNode, 404),
    (ArtifactFormatError, 422),
    (SignatureError, 422),
    (ArtifactError, 404),
    (DuplicateTask, 409),
    (TaskNotCancellable, 409),
    (SignerNotTrusted, 422),
    (RollbackRefused, 409),
    (PayloadTooLarge, 413),
    (UnsupportedContentType, 415),
    (NoPlacement, 422),
    (NodeUnavailable, 503),
    (FabricError, 503),
    (ControllerError, 400),
]


def status_of(exc: FadesError) -> int:
    for cls, code in STATUS:
        if isinstance(exc, cls):
            return code
    return 500


def error_body(exc: FadesError) -> dict[str, Any]:
    """The JSON of a refusal: ``detail``, ``error_kind`` and, for a task, ``problems``."""
    body: dict[str, Any] = {"detail": str(exc), "error_kind": exc.kind}
    if isinstance(exc, TaskValidationError) and exc.problems:
        body["problems"] = [{"field": f, "reason": r} for f, r in exc.problems]
    return body
