"""Ctrl-C while ``fades up`` is still starting stops it at once and leaves no process behind
(it used to finish the whole start, print how to use the cluster, and only then stop)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

FADES = str(Path(sys.executable).with_name("fades"))


def _processes_under(folder: Path) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(folder) in cmd:
            found.append(f"{entry.name}: {cmd[:200]}")
    return found


def test_ctrl_c_while_fades_up_starts_stops_everything_at_once(tmp_path: Path) -> None:
    home = tmp_path / "up"
    proc = subprocess.Popen(
        [FADES, "up", "--nodes", "1", "--days", "0.05", "--no-sensors", "--home", str(home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, COLUMNS="200"),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        for line in proc.stdout:  # the hub is up: the start goes on with the controller
            seen.append(line)
            if line.startswith("NATS hub1"):
                break
        assert seen and seen[-1].startswith("NATS hub1"), "".join(seen)
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        rest, _ = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(seen) + rest
    assert "stopped" in out, out
    assert "try:" not in out and "nodes up" not in out, out  # the start did not go on
    assert took < 30, (took, out)
    assert proc.returncode == 130, out
    assert _processes_under(home) == []
