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


class _Proc:
    def __init__(self, rc: int | None) -> None:
        self.returncode = rc

    def poll(self) -> int | None:
        return self.returncode


def test_fades_up_restarts_one_of_several_controllers_instead_of_stopping() -> None:
    from fades.cli.local import _supervise

    started: list[int] = []

    class _Two:
        n_controllers = 2

        def __init__(self) -> None:
            self.names = ["edge1"]
            self.sites: dict[str, object] = {}
            self.procs = {
                "edge1": _Proc(None),
                "controller1": _Proc(-9),
                "controller2": _Proc(None),
            }

        def start_controller(self, i: int) -> None:
            started.append(i)
            self.procs[f"controller{i}"] = _Proc(None)

        def _check_alive(self) -> None:
            for label, proc in self.procs.items():
                assert proc.poll() is None, f"{label} would stop the cluster"

    cluster, restarts, said = _Two(), {}, []  # type: ignore[var-annotated]
    _supervise(cluster, restarts, said.append)
    assert said == ["controller1 exited with -9; restarting in 1 s"]
    restarts["controller1"] = (0.0, 2.0)  # the backoff has passed
    _supervise(cluster, restarts, said.append)
    assert started == [1] and said[-1] == "controller1: restarting"
