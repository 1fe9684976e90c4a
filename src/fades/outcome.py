"""How a task ended: the one type shared by the node, the wire, the controller, the HTTP API
and the CLI.

A node builds an :class:`Outcome` when a task finishes (or fails), stores it, publishes it
on the fabric; the controller stores the same object and serves it over HTTP; the CLI renders
it. Nothing downstream re-shapes it. Decoding validates every field, so a peer (or a
sandbox) cannot smuggle in a wrong type.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

OutcomeStatus = Literal["done", "failed"]

#: The phases of a task's time, in seconds, in the order a task goes through them.
TIMING_KEYS = ("queue", "retrieval", "transfer", "start", "compute", "result", "total")


class Outcome(BaseModel):
    """A finished (``done``) or failed task.

    Attributes:
        task_id, tenant: the task and who asked for it.
        node: where it ran (a node name, or ``cloud``).
        status: ``done`` or ``failed``.
        result: the function's return value (``done`` only).
        error_kind: the error's class name in :mod:`fades.errors` (``failed`` only).
        error: a one-line, bounded message (``failed`` only).
        traceback: the function's own traceback, bounded, when the function raised.
        logs: the function's bounded stdout/stderr.
        timing: seconds per phase (see :data:`TIMING_KEYS`).
        bytes_read: bytes of data the node read for the task.
        bytes_returned: bytes of the encoded result.
        digest: the ``sha256:`` digest of the function artifact that ran.
        attempts: how many times the node started the task.
        accepted_at, started_at, finished_at: Unix times on the node.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    task_id: str
    tenant: str
    node: str
    status: OutcomeStatus
    result: Any = None
    error_kind: str | None = None
    error: str | None = None
    traceback: str | None = None
    logs: str | None = None
    timing: dict[str, float] = Field(default_factory=dict)
    bytes_read: int = 0
    bytes_returned: int = 0
    digest: str | None = None
    attempts: int = 1
    accepted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "done"

    def encode(self) -> bytes:
        """The wire form (compact JSON)."""
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, data: bytes | str) -> Outcome:
        """Parse and validate the wire form.

        Raises:
            pydantic.ValidationError: the bytes are not a valid outcome.
        """
        return cls.model_validate_json(data)
