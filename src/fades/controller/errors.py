"""Refusals particular to the controller (all :class:`~fades.errors.ControllerError`).

They sit beside the shared tree in :mod:`fades.errors`::

    ControllerError
    ├── Unauthorized      (fades.errors) missing or unknown bearer token     -> 401
    ├── NoPlacement       (fades.errors) no up node holds the task's data    -> 422
    ├── Forbidden         the task's tenant is not the token's tenant        -> 403
    ├── UnknownNode       no node of that name ever registered               -> 404
    └── DuplicateTask     a task with that id was already submitted          -> 409
"""

from __future__ import annotations

from fades.errors import ControllerError


class Forbidden(ControllerError):
    """The request acts for a tenant other than the one its token belongs to."""


class UnknownNode(ControllerError):
    """No node of that name is in the registry."""


class DuplicateTask(ControllerError):
    """A task with this id was already submitted (task ids are unique across tenants)."""


__all__ = ["DuplicateTask", "Forbidden", "UnknownNode"]
