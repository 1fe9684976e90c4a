"""The devices part of the HTTP API: the device list, actuator commands, and the audit.

Same bearer tokens as tasks. A tenant sees the devices its nodes' access policies let it
see (``may_command`` says whether it may command each), commands those its declarations
allow (403 otherwise, and the refusal is audited), and reads its own audit, newest first.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from fades.controller.auth import Tenant
from fades.devices.commands import DeviceService

router = APIRouter(prefix="/v1", tags=["devices"])

#: longest node or device name taken in a path
MAX_NAME = 64
Name = Annotated[str, Path(max_length=MAX_NAME)]


def _service(request: Request) -> DeviceService:
    service: DeviceService = request.app.state.controller.devices
    return service


class CommandBody(BaseModel):
    """An actuator command."""

    model_config = ConfigDict(extra="forbid")

    command: str = Field(min_length=1, max_length=32, description="one the device accepts")
    args: dict[str, Any] | None = Field(default=None, description="JSON object, <= 4 KiB")
    source: Literal["api", "console"] = Field(
        default="api", description="recorded in the audit: the API or the console"
    )


class CommandReceipt(BaseModel):
    command_id: str
    outcome: Literal["applied", "refused", "timed_out", "pending"]
    state: dict[str, Any] | None
    detail: str


@router.get("/devices")
async def list_devices(tenant: Tenant, request: Request) -> list[dict[str, Any]]:
    """Sensors and actuators of every node you may see, with each actuator's last state."""
    return _service(request).devices(tenant)


@router.post("/devices/{node}/{device}/commands", response_model=CommandReceipt)
async def command_device(
    tenant: Tenant, request: Request, node: Name, device: Name, body: CommandBody
) -> dict[str, Any]:
    """Command an actuator and wait (bounded) for its state report: applied, refused or
    timed_out. 403 when you may not command it, 404 for an unknown device, 400 for a
    command it does not accept (naming the allowed ones)."""
    return await _service(request).command(
        tenant, node, device, body.command, body.args, source=body.source
    )


@router.get("/audit")
async def audit(
    tenant: Tenant, request: Request, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
) -> list[dict[str, Any]]:
    """Your actuator commands (refusals included), newest first."""
    return await _service(request).audit(tenant, limit)
