"""The parts of a task (:class:`~fades.task.Task`): its credentials, data operations and
their selectors, the function to run (with its state policy) and the device it serves, and the
bounds each field is held to. :mod:`fades.task` re-exports them; import them from there.
"""

from __future__ import annotations

import re
import types
import typing
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from fades.tasktext import check_json

#: Largest ``params``, in bytes of compact JSON.
MAX_PARAMS_BYTES = 256 * 2**10
#: Longest a persistent task may be asked to live (``max_duration_s``): 30 days.
MAX_PERSISTENT_SECONDS = 30 * 86_400
#: Longest relative window (``last_seconds``): 100 years.
MAX_WINDOW_SECONDS = 100 * 365 * 86_400
#: Most rows one ``last`` may ask for.
MAX_LAST = 10**9
#: Most names in one selector field (``location: [...]`` etc.).
MAX_NAMES = 1000
#: Largest ``inputs`` (values carried inline with the task), in bytes of compact JSON.
MAX_INPUT_BYTES = 512 * 2**10
#: Most problems listed in a TaskValidationError (the count of the rest is given).
MAX_PROBLEMS = 20

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

StrOrList = str | list[str] | None

_EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
_LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def _bounded_time(v: datetime | None) -> datetime | None:
    """UTC if naive; refused outside 1900-9000 (so window arithmetic can never overflow)."""
    if v is None:
        return v
    if v.tzinfo is None:
        v = v.replace(tzinfo=UTC)
    try:
        inside = _EARLIEST <= v <= _LATEST
    except OverflowError:
        inside = False
    if not inside:
        raise ValueError("must be a time between 1900-01-01 and 9000-01-01")
    return v


def _ident_value(v: str) -> str:
    """An id, tenant, connector or device name: refused unless it matches ``ID_RE``."""
    if not ID_RE.match(v):
        raise ValueError(
            "must be 1-64 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return v


def _as_list(v: StrOrList) -> list[str] | None:
    if v is None:
        return None
    return [v] if isinstance(v, str) else list(v)


def _kinds(annotation: Any) -> set[Any]:
    """The plain types an annotation admits (through ``X | None``, unions, ``Annotated``)."""
    args = typing.get_args(annotation)
    if not args:
        return {annotation}
    if typing.get_origin(annotation) is typing.Annotated:
        return _kinds(args[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return set().union(*(_kinds(a) for a in args))
    return {typing.get_origin(annotation)}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, v: Any, info: ValidationInfo) -> Any:
        """``true`` is not a number and ``1`` is not ``true``: pydantic would take either for
        the other (``memory_mib: true`` ran with 1 MiB)."""
        if info.field_name is None or not isinstance(v, int | float):  # (most values)
            return v
        kinds = _kinds(cls.model_fields[info.field_name].annotation)
        if isinstance(v, bool) and bool not in kinds and kinds & {int, float}:
            raise ValueError(f"must be a number, not {str(v).lower()}")
        if isinstance(v, int | float) and not isinstance(v, bool) and kinds == {bool}:
            raise ValueError(f"must be true or false, not {v}")
        return v


class Credentials(Strict):
    """Who is asking and how urgent it is."""

    task_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:16])
    tenant: str
    priority: int = Field(default=5, ge=0, le=9, description="0 lowest, 9 most urgent")
    deadline: datetime | None = Field(
        default=None, description="absolute time by which the result is wanted (UTC if naive)"
    )

    @field_validator("task_id", "tenant")
    @classmethod
    def _ident(cls, v: str) -> str:
        return _ident_value(v)

    @field_validator("deadline")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return _bounded_time(v)


class Selector(Strict):
    """Which readings a data operation selects. Unset fields select everything."""

    sensor_type: StrOrList = None
    location: StrOrList = None
    device: StrOrList = None
    since: datetime | None = None
    until: datetime | None = None
    last_seconds: float | None = Field(
        default=None,
        gt=0,
        le=MAX_WINDOW_SECONDS,
        allow_inf_nan=False,
        description="only readings from the last N seconds",
    )
    last: int | None = Field(
        default=None, gt=0, le=MAX_LAST, description="only the newest N readings"
    )

    @field_validator("sensor_type", "location", "device")
    @classmethod
    def _non_empty(cls, v: StrOrList) -> StrOrList:
        if v is not None and (v == [] or any(not s for s in _as_list(v) or [])):
            raise ValueError("must be a non-empty name or a non-empty list of names")
        names = _as_list(v) or []
        if len(names) > MAX_NAMES:
            raise ValueError(f"at most {MAX_NAMES} names, got {len(names)}")
        if any(len(n) > 256 for n in names):
            raise ValueError("a name is at most 256 characters")
        return v

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return _bounded_time(v)

    @model_validator(mode="after")
    def _window(self) -> Selector:
        if self.since and self.until and self.since >= self.until:
            raise ValueError("'since' must be earlier than 'until'")
        return self

    @property
    def sensor_types(self) -> list[str] | None:
        return _as_list(self.sensor_type)

    @property
    def locations(self) -> list[str] | None:
        return _as_list(self.location)

    @property
    def devices(self) -> list[str] | None:
        return _as_list(self.device)

    def time_bounds(self, now: datetime | None = None) -> tuple[float | None, float | None]:
        """The selected time window as epoch seconds ``(start, end)``; ``None`` is open."""
        start = self.since.timestamp() if self.since else None
        end = self.until.timestamp() if self.until else None
        if self.last_seconds is not None:
            now = now or datetime.now(UTC)
            rel = (now - timedelta(seconds=self.last_seconds)).timestamp()
            start = rel if start is None else max(start, rel)
        return start, end


class DataOp(Strict):
    """One data retrieval operation: fetch with ``connector`` what ``select`` selects."""

    name: str = Field(description="the name under which the function sees this dataset")
    connector: str = "sqlite"
    select: Selector = Field(default_factory=Selector)
    allow_empty: bool = Field(
        default=False,
        description="an empty selection is passed to the function; otherwise the task fails "
        "with NoData",
    )

    @field_validator("connector")
    @classmethod
    def _connector(cls, v: str) -> str:
        return _ident_value(v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("must be a Python-style identifier (letters, digits, '_')")
        return v


class EveryN(Strict):
    """Checkpoint after every N-th invocation."""

    every_n: int = Field(ge=1, le=10**9)


class EveryS(Strict):
    """Checkpoint after the first invocation that ends at least S seconds after the last one."""

    every_s: float = Field(gt=0, le=86_400, allow_inf_nan=False)


class StateSpec(Strict):
    """A stateful persistent function: its state is checkpointed (see docs/state.md)."""

    checkpoint: Literal["every"] | EveryN | EveryS = Field(
        default="every",
        description="'every' invocation, {'every_n': N} invocations or {'every_s': S} seconds",
    )

    @field_validator("checkpoint", mode="before")
    @classmethod
    def _policy(cls, v: Any) -> Any:
        shape = "must be 'every', {every_n: N} (1..10^9) or {every_s: S} (0 < S <= 86400)"
        if isinstance(v, (EveryN, EveryS)) or v == "every":
            return v
        if not isinstance(v, dict) or len(v) != 1 or next(iter(v)) not in ("every_n", "every_s"):
            raise ValueError(f"{shape}, not {str(v)[:60]!r}")
        try:
            return EveryN(**v) if "every_n" in v else EveryS(**v)
        except ValidationError:
            raise ValueError(f"{shape}, not {str(v)[:60]!r}") from None

    def due(self, done_since: int, seconds_since: float) -> bool:
        """Whether to checkpoint now, ``done_since`` invocations and ``seconds_since`` seconds
        after the last checkpoint."""
        c = self.checkpoint
        if isinstance(c, EveryN):
            return done_since >= c.every_n
        if isinstance(c, EveryS):
            return done_since > 0 and seconds_since >= c.every_s
        return done_since > 0


class FunctionSpec(Strict):
    """Which function to run on the data, with what parameters and limits."""

    artifact: str = Field(description="'sha256:<digest>' or the name of a function on the node")
    params: dict[str, Any] = Field(default_factory=dict)
    memory_mib: int = Field(default=64, ge=1, le=4096)
    time_budget_ms: int = Field(default=5000, ge=1, le=3_600_000)
    mode: Literal["ephemeral", "persistent"] = "ephemeral"
    period_s: float | None = Field(default=None, gt=0, le=86_400, allow_inf_nan=False)
    invocations: int | None = Field(
        default=None,
        gt=0,
        le=10**9,
        description="persistent only: stop after this many invocations",
    )
    max_duration_s: float | None = Field(
        default=None,
        gt=0,
        le=MAX_PERSISTENT_SECONDS,
        allow_inf_nan=False,
        description="persistent only: stop this long after the task was accepted "
        "(also capped by the node's max_persistent_seconds)",
    )
    state: StateSpec | None = Field(
        default=None,
        description="persistent only: keep the function's state in checkpoints "
        "(absent: not stateful)",
    )

    @field_validator("artifact")
    @classmethod
    def _artifact(cls, v: str) -> str:
        if v.startswith("sha256:"):
            if not re.fullmatch(r"sha256:[0-9a-f]{64}", v):
                raise ValueError("a digest reference must be 'sha256:' and 64 hex digits")
        elif not ID_RE.match(v):
            raise ValueError("must be 'sha256:<digest>' or a function name")
        return v

    @field_validator("params")
    @classmethod
    def _jsonable(cls, v: dict[str, Any]) -> dict[str, Any]:
        check_json(v, "parameters", MAX_PARAMS_BYTES, " (they travel inside one message)")
        return v

    @model_validator(mode="after")
    def _persistent(self) -> FunctionSpec:
        if self.mode == "persistent" and self.period_s is None:
            raise ValueError("a persistent function needs 'period_s'")
        if self.mode == "ephemeral" and (
            self.period_s is not None or self.invocations or self.max_duration_s is not None
        ):
            raise ValueError(
                "'period_s', 'invocations' and 'max_duration_s' apply only to mode 'persistent'"
            )
        if self.state is not None and self.mode != "persistent":
            raise ValueError("'state' applies only to mode 'persistent'")
        return self


class Device(Strict):
    """The device that offloads a task, as it declares itself (for the Nimbus placer).

    With a declaration, "run it on the device" is a valid placement: the placer compares
    what offloading would cost the device (radio time at ``tx_power_w`` over its uplink)
    and how long it would take against running the task locally.
    """

    name: str = Field(description="the device's name (tasks of one device share decisions)")
    local_latency_ms: float = Field(
        gt=0, le=3_600_000, allow_inf_nan=False, description="time to run the task locally"
    )
    local_energy_mj: float = Field(
        gt=0, le=1e9, allow_inf_nan=False, description="energy the device spends running it"
    )
    uplink_mbps: float = Field(
        gt=0, le=1e6, allow_inf_nan=False, description="the device's uplink bandwidth"
    )
    rtt_ms: float = Field(
        default=0.0,
        ge=0,
        le=60_000,
        allow_inf_nan=False,
        description="round-trip time from the device to the controller",
    )
    tx_power_w: float = Field(
        default=1.21,
        gt=0,
        le=100,
        allow_inf_nan=False,
        description="radio power while sending (W = mJ/ms; 1.21: Wi-Fi, as in Nimbus)",
    )
    budget_ms: float | None = Field(
        default=None,
        gt=0,
        le=3_600_000,
        allow_inf_nan=False,
        description="latency wanted at most (default: local_latency_ms: offloading must "
        "not be slower than running locally)",
    )

    @field_validator("name")
    @classmethod
    def _ident(cls, v: str) -> str:
        return _ident_value(v)
