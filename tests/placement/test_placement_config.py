"""Defaults carry the published parameters; YAML overrides any subset of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from fades.errors import PlacementError
from fades.placement.config import SimConfig, load_config


def test_defaults_are_the_published_parameters() -> None:
    cfg = SimConfig()
    n = cfg.nimbus
    assert (n.alpha, n.beta) == (0.7, 0.3)
    assert n.frame_kb == 33.0 and n.fps == 15.0
    assert n.eps_t_ms == pytest.approx(66.67, abs=0.01)
    assert [(p.local_ms, p.local_mj) for p in n.phones] == [(154, 182), (116, 318), (190, 268)]
    assert n.wifi_mbps == 300.0 and n.aps_per_t1 == 2
    assert [(q.slope_ms, q.intercept_ms, q.compute_ms) for q in n.queue] == [
        (23.3, -41.5, 22.6),
        (7.09, -11.6, 7.2),
        (0.656, -11.9, 5.2),
    ]
    assert [c.mean_ms for c in n.rtt_mixture[0]] == [40.8, 134.6, 208.5]
    assert (n.cloud.rtt_mean_ms, n.cloud.rtt_sd_ms, n.cloud.inference_ms) == (29.2, 28.7, 5.0)
    assert cfg.batches == (500, 1000, 2000, 4000) and cfg.iterations == 100


def test_yaml_overrides_nested_fields_and_keeps_the_rest(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("nimbus:\n  alpha: 0.5\n  cloud: {count: 3}\nbatches: [10, 20]\n")
    cfg = load_config(f, iterations=7)
    assert cfg.nimbus.alpha == 0.5 and cfg.nimbus.beta == 0.3
    assert cfg.nimbus.cloud.count == 3 and cfg.nimbus.cloud.rtt_mean_ms == 29.2
    assert cfg.batches == (10, 20) and cfg.iterations == 7


@pytest.mark.parametrize(
    "text", ["nimbus: {alpah: 1}\n", "iterations: 0\n", "- a list\n", "nimbus: {phones: []}\n"]
)
def test_bad_yaml_raises_placement_error(tmp_path: Path, text: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(PlacementError):
        load_config(f)


def test_missing_file_raises_placement_error(tmp_path: Path) -> None:
    with pytest.raises(PlacementError):
        load_config(tmp_path / "nope.yaml")
