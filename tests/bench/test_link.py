"""CappedLink: a real network namespace, veth pair and tbf caps, measured with plain TCP.

These tests need root and iproute2 (``ip``, ``tc``); they are skipped with the reason
otherwise. Each builds its own uniquely named namespace and checks that it is gone after.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from fades.bench.link import CappedLink, measure_tcp
from fades.errors import FabricError

REASON = CappedLink.check()
needs_link = pytest.mark.skipif(REASON is not None, reason=f"capped link unavailable: {REASON}")


@needs_link
def test_uplink_and_downlink_are_capped_and_cleaned_up() -> None:
    # loopback baseline with the same probe: far above both caps
    loopback = measure_tcp(lambda c: c, "127.0.0.1", "up", 20_000_000)
    with CappedLink("fades-test", up_mbit=0.574, down_mbit=45.38) as link:
        made = link.exists()
        assert made == {"netns": True, "veth": True}
        up = link.measure("up", 120_000)  # ~1.7 s at 0.574 Mbit/s
        down = link.measure("down", 4_000_000)  # ~0.7 s at 45.38 Mbit/s
        stats = link.stats()
    assert link.exists() == {"netns": False, "veth": False}
    # the cap holds (tbf lets a small burst through, hence the slack) ...
    assert up < 2 * 0.574, f"uplink {up:.3f} Mbit/s is not capped at 0.574"
    assert down < 2 * 45.38, f"downlink {down:.1f} Mbit/s is not capped at 45.38"
    # ... and the link still carries data near its rate
    assert up > 0.574 / 3 and down > 45.38 / 3, (up, down)
    assert loopback > 50 * down > 50 * up, (loopback, down, up)
    # the uplink bucket carried the upload
    assert stats["up"]["sent_bytes"] >= 120_000


@needs_link
def test_other_rates_and_parallel_links_do_not_collide() -> None:
    with CappedLink("fades-a", up_mbit=2.0, down_mbit=2.0) as a, CappedLink("fades-b") as b:
        assert a.netns != b.netns and a.edge_if != b.edge_if
        assert a.cloud_ip != b.cloud_ip
        # a process in namespace a sees only its own end of the link
        out = subprocess.run(
            a.ns_cmd(["ip", "-o", "-4", "addr", "show"]), capture_output=True, text=True
        ).stdout
        assert a.cloud_ip in out and b.cloud_ip not in out and a.edge_ip not in out
        rate = a.measure("up", 400_000)  # ~1.6 s at 2 Mbit/s
        assert 2.0 / 3 < rate < 4.0, rate
    assert a.exists() == b.exists() == {"netns": False, "veth": False}


@needs_link
def test_cleanup_after_an_error_kills_processes_in_the_namespace() -> None:
    link = CappedLink("fades-err")
    with pytest.raises(RuntimeError, match="boom"), link:
        sleeper = subprocess.Popen(
            link.ns_cmd([sys.executable, "-c", "import time; time.sleep(60)"])
        )
        deadline = time.monotonic() + 10
        while not link.pids() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert link.pids(), "the sleeper should run inside the namespace"
        raise RuntimeError("boom")
    assert sleeper.wait(timeout=10) != 0  # killed by the cleanup
    assert link.exists() == {"netns": False, "veth": False}


def test_check_reports_why_it_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    reason = CappedLink.check()
    assert reason is not None and "root" in reason
    with pytest.raises(FabricError, match="root"), CappedLink("fades-nope"):
        pass


def test_rates_must_be_positive() -> None:
    with pytest.raises(ValueError):
        CappedLink("x", up_mbit=0)
