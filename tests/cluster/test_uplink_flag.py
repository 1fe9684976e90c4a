"""``fades up`` cuts a site's uplink while ``sites/<site>/uplink-cut`` exists (docs/sites.md)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from fades.cli.local import UPLINK_CUT, _follow_uplink_flags


class _Cluster:
    def __init__(self, site_dir: Path) -> None:
        self.leaf = SimpleNamespace(dir=site_dir, uplink_up=True)
        self.sites = {"edge1": self.leaf}

    def cut_uplink(self, name: str) -> None:
        self.leaf.uplink_up = False

    def restore_uplink(self, name: str) -> None:
        self.leaf.uplink_up = True


def test_the_flag_file_cuts_the_uplink_and_removing_it_restores_it(tmp_path: Path) -> None:
    cluster, said = _Cluster(tmp_path), []
    _follow_uplink_flags(cluster, said.append)
    assert cluster.leaf.uplink_up and said == []
    (tmp_path / UPLINK_CUT).touch()
    _follow_uplink_flags(cluster, said.append)
    _follow_uplink_flags(cluster, said.append)  # stays cut, said once
    assert not cluster.leaf.uplink_up
    assert len(said) == 1 and "uplink cut" in said[0]
    (tmp_path / UPLINK_CUT).unlink()
    _follow_uplink_flags(cluster, said.append)
    assert cluster.leaf.uplink_up and said[-1] == "site edge1: uplink restored"
