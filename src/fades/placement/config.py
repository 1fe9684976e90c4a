"""Default parameters of the Nimbus model and simulator, and their YAML override.

Every default below comes from the Nimbus paper (Cozzolino et al., IEEE TCC 2022; thesis
§4.8.1) or from the parameters of the authors' public simulator, as collected in
``DESIGN.md`` ("Figures from the seeds"). Values that neither source publishes (the weights
and spreads of the RTT mixture, the constant RTT between an access point and its own T1
node) are our assumptions and are marked as such; ``docs/placement.md`` lists them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fades.errors import PlacementError

__all__ = [
    "CloudConfig",
    "InfraSize",
    "MixtureComponent",
    "NimbusConfig",
    "PhoneClass",
    "QueueFit",
    "SimConfig",
    "VariantsConfig",
    "load_config",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QueueFit(_Strict):
    """Linear queue-time fit of one edge tier: ``q(c) = max(0, slope*c + intercept)`` ms."""

    slope_ms: float = Field(gt=0)
    intercept_ms: float
    compute_ms: float = Field(ge=0)
    hardware: str = ""


class PhoneClass(_Strict):
    """A mobile-device class: time and energy of one local inference."""

    name: str
    local_ms: float = Field(gt=0)
    local_mj: float = Field(gt=0)


class MixtureComponent(_Strict):
    """One Gaussian component of an RTT mixture (values are folded at zero)."""

    weight: float = Field(gt=0)
    mean_ms: float = Field(ge=0)
    sd_ms: float = Field(ge=0)


class CloudConfig(_Strict):
    """Cloud datacenters reached over the AP's Wi-Fi; RTT is log-normal with this mean/sd."""

    count: int = Field(default=1, ge=0)
    rtt_mean_ms: float = Field(default=29.2, gt=0)
    rtt_sd_ms: float = Field(default=28.7, ge=0)
    inference_ms: float = Field(default=5.0, ge=0)


class InfraSize(_Strict):
    """Node counts of one infrastructure (APs default to ``aps_per_t1`` per T1 node)."""

    name: str
    t1: int = Field(ge=0)
    t2: int = Field(ge=0)
    t3: int = Field(ge=0)
    aps: int | None = Field(default=None, ge=1)


# The authors' published RTT mixture has three components with these means; weights and
# standard deviations are not published (they live in a binary pickle) and are our choice.
_DEFAULT_MIXTURE = (
    MixtureComponent(weight=0.55, mean_ms=40.8, sd_ms=18.0),
    MixtureComponent(weight=0.30, mean_ms=134.6, sd_ms=25.0),
    MixtureComponent(weight=0.15, mean_ms=208.5, sd_ms=20.0),
)


class NimbusConfig(_Strict):
    """Parameters of the model and the algorithm (everything except the experiment grid)."""

    alpha: float = Field(default=0.7, ge=0)
    beta: float = Field(default=0.3, ge=0)
    kappa: int = Field(default=0, ge=0, description="random candidate subset size; 0 = all")
    frame_kb: float = Field(default=33.0, gt=0)
    fps: float = Field(default=15.0, gt=0)
    tx_power_mj_per_ms: float = Field(default=1.21, gt=0)
    wifi_mbps: float = Field(default=300.0, gt=0)
    tier_bw_mbps: tuple[float, float, float] = (300.0, 1000.0, 5000.0)
    own_t1_rtt_ms: float = Field(default=2.0, ge=0)
    aps_per_t1: int = Field(default=2, ge=1)
    queue: tuple[QueueFit, QueueFit, QueueFit] = (
        QueueFit(slope_ms=23.3, intercept_ms=-41.5, compute_ms=22.6, hardware="Jetson TX2"),
        QueueFit(slope_ms=7.09, intercept_ms=-11.6, compute_ms=7.2, hardware="GTX 1060"),
        QueueFit(slope_ms=0.656, intercept_ms=-11.9, compute_ms=5.2, hardware="RTX 2080"),
    )
    phones: tuple[PhoneClass, ...] = (
        PhoneClass(name="Mobile_A (OnePlus 5T)", local_ms=154.0, local_mj=182.0),
        PhoneClass(name="Mobile_B (OnePlus 3)", local_ms=116.0, local_mj=318.0),
        PhoneClass(name="Mobile_C (Redmi Note 4X)", local_ms=190.0, local_mj=268.0),
    )
    rtt_mixture: tuple[
        tuple[MixtureComponent, ...], tuple[MixtureComponent, ...], tuple[MixtureComponent, ...]
    ] = (_DEFAULT_MIXTURE, _DEFAULT_MIXTURE, _DEFAULT_MIXTURE)
    cloud: CloudConfig = CloudConfig()

    @property
    def eps_t_ms(self) -> float:
        """Per-frame latency budget: one frame interval."""
        return 1000.0 / self.fps

    @model_validator(mode="after")
    def _check(self) -> NimbusConfig:
        if not self.phones:
            raise ValueError("at least one phone class is needed")
        for tier in self.rtt_mixture:
            if not tier:
                raise ValueError("every tier needs at least one RTT mixture component")
        return self


class VariantsConfig(_Strict):
    """The MT / 2PMT experiment (paper Table 4-(D): 100/50/2 nodes, 1000 devices, 10 fps)."""

    workers: tuple[int, ...] = (1, 2, 4, 8)
    infrastructure: InfraSize = InfraSize(name="D", t1=100, t2=50, t3=2)
    devices: int = Field(default=1000, ge=1)
    fps: float = Field(default=10.0, gt=0)
    iterations: int = Field(default=10, ge=1)


class SimConfig(_Strict):
    """The whole simulation: model parameters plus the experiment grid."""

    nimbus: NimbusConfig = NimbusConfig()
    infrastructures: tuple[InfraSize, ...] = (
        InfraSize(name="C0", t1=350, t2=200, t3=10),
        InfraSize(name="C1", t1=250, t2=100, t3=5),
        InfraSize(name="C2", t1=150, t2=50, t3=2),
        InfraSize(name="C3", t1=100, t2=25, t3=0),
    )
    batches: tuple[int, ...] = (500, 1000, 2000, 4000)
    iterations: int = Field(default=100, ge=1)
    seed: int = 0
    variants: VariantsConfig = VariantsConfig()


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None = None, **overrides: Any) -> SimConfig:
    """Build a :class:`SimConfig` from the defaults, a YAML file, then keyword overrides.

    The YAML file may set any subset of fields, nested as in :class:`SimConfig`
    (e.g. ``nimbus: {alpha: 0.5}``); unknown keys are rejected.

    Raises:
        PlacementError: the file is unreadable, not a mapping, or fails validation.
    """
    data: dict[str, Any] = SimConfig().model_dump()
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise PlacementError(f"cannot read placement config {path}: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise PlacementError(f"placement config {path} must be a mapping")
        data = _deep_merge(data, loaded)
    data = _deep_merge(data, {k: v for k, v in overrides.items() if v is not None})
    try:
        return SimConfig.model_validate(data)
    except ValidationError as exc:
        raise PlacementError(f"invalid placement config: {exc}") from exc
