"""A ``fades up`` killed with SIGKILL leaves its nats-server, controller and node agent running
(they are in their own sessions); the next ``fades up`` on the same folder stops them before it
makes the folder again, and leaves alone other processes that only mention the folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from fades.leftovers import _alive, find_leftovers, stop_leftovers

FADES = str(Path(sys.executable).with_name("fades"))


def _up(home: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [FADES, "up", "--nodes", "1", "--days", "0.05", "--no-sensors", "--home", str(home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, COLUMNS="200"),
    )


def _read_until_started(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:  # the cluster is up once it says how to stop it
        seen.append(line)
        if line.startswith("stop: Ctrl-C"):
            return "".join(seen)
    raise AssertionError("fades up ended before it started:\n" + "".join(seen))


def test_a_killed_fades_up_leaves_nothing_running_after_the_next_start(tmp_path: Path) -> None:
    home = tmp_path / "up"
    first = _up(home)
    second: subprocess.Popen[str] | None = None
    bystander: subprocess.Popen[bytes] | None = None
    try:
        _read_until_started(first)
        first.kill()
        first.wait(timeout=30)
        left = [pid for pid, _ in find_leftovers(home)]
        assert len(left) >= 3, find_leftovers(home)  # nats-server, controller, node agent
        bystander = subprocess.Popen(["tail", "-f", str(home / "logs" / "controller1.log")])

        second = _up(home)
        out = _read_until_started(second)
        assert f"stopping {len(left)} processes an earlier cluster left running" in out, out
        assert not [pid for pid in left if _alive(pid)], find_leftovers(home)
        assert bystander.poll() is None  # it only reads a file in the folder
        assert len(find_leftovers(home)) >= 3  # the new cluster's own parts

        second.send_signal(signal.SIGINT)
        rest, _ = second.communicate(timeout=120)
        assert second.returncode == 0 and "stopped" in rest, rest
        assert find_leftovers(home) == []
    finally:
        for proc in (first, second, bystander):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        stop_leftovers([pid for pid, _ in find_leftovers(home)], timeout=5)
