"""A second cluster on a folder that a running cluster uses is refused, not wiped."""

from __future__ import annotations

from pathlib import Path

import pytest

from fades.cluster import LocalCluster
from fades.errors import FadesError


def _cluster(home: Path) -> LocalCluster:
    return LocalCluster(home, nodes=1, days=0.01, sensors=False, devices=False)


def test_a_second_cluster_on_a_folder_in_use_is_refused_and_the_folder_kept(
    tmp_path: Path,
) -> None:
    home = tmp_path / "up"
    first = _cluster(home)
    first.prepare()
    tokens = (first.controller_home / "tokens.yaml").read_text()
    try:
        with pytest.raises(FadesError, match="in use by a running cluster"):
            _cluster(home).prepare()
        assert (first.controller_home / "tokens.yaml").read_text() == tokens
    finally:
        first.stop()
    second = _cluster(home)  # once the first has stopped, the folder may be made fresh
    second.prepare()
    second.stop()
    assert (second.controller_home / "tokens.yaml").read_text() != tokens
