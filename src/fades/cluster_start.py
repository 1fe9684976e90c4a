"""Starting a :class:`~fades.cluster.LocalCluster` without giving up on a slow hub.

A clustered hub (``fades up --hub 3``) can have a JetStream meta leader and still not answer
the first request that creates a replicated stream, bucket or object store: each of those
elects its own leader, and on a busy machine that can take longer than one request's
timeout. Then a node agent or a controller exits at start with ``object store ...:
TimeoutError`` and the whole cluster used to stop. Two things here prevent that:

- :func:`wait_fabric` creates the fabric's shared streams, the function repository's object
  store and its bucket on the hub (with the hub's number of copies) before any controller
  or node starts, trying again until ``FABRIC_WAIT_S`` have passed;
- :class:`StartRetries` starts a node or controller that exits while the cluster is still
  starting once more (up to ``START_ATTEMPTS`` times in all), saying so with the last line
  of its log, instead of stopping everything.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from fades.errors import FabricError, FadesError

__all__ = ["FABRIC_WAIT_S", "START_ATTEMPTS", "StartRetries", "wait_fabric"]

#: how long a starting cluster waits for the hub's JetStream to create its shared assets
FABRIC_WAIT_S = 90.0
#: how many times a node or controller is started while the cluster starts (1 + retries)
START_ATTEMPTS = 3


async def _create_assets(url: str, replicas: int) -> None:
    from fades.bus.nats import NatsBus
    from fades.fabric.connect import FabricSettings
    from fades.fabric.repository import ArtifactRepository
    from fades.fabric.streams import ensure_streams

    bus = await NatsBus.connect(
        FabricSettings(url=url, replicas=replicas), name="fades-up-probe", timeout=10.0
    )
    try:
        await ensure_streams(bus)
        await ArtifactRepository.open(bus)
    finally:
        await bus.close()


def wait_fabric(
    url: str,
    replicas: int,
    say: Callable[[str], None],
    timeout: float = FABRIC_WAIT_S,
) -> int:
    """Create the shared streams and the function repository on the hub at ``url``, trying
    again on failure until ``timeout``; return how many attempts it took.

    Raises:
        FabricError: the hub still refused after ``timeout`` seconds (the last reason).
    """
    deadline = time.monotonic() + timeout
    pause, attempt = 0.5, 0
    while True:
        attempt += 1
        try:
            asyncio.run(_create_assets(url, replicas))
            return attempt
        except FadesError as exc:
            if time.monotonic() + pause > deadline:
                raise FabricError(
                    f"the hub's JetStream did not create the fabric's streams within "
                    f"{timeout:.0f} s ({attempt} attempts): {exc}"
                ) from exc
            if attempt == 1:
                say(f"hub: JetStream not ready yet ({exc}); waiting up to {timeout:.0f} s")
        time.sleep(pause)
        pause = min(pause * 2, 4.0)


def _last_line(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][-300:] if lines else ""


class StartRetries:
    """Starts again a node or controller that exited while its cluster was starting."""

    def __init__(self, say: Callable[[str], None], attempts: int = START_ATTEMPTS) -> None:
        self.say = say
        self.attempts = attempts
        self.count: dict[str, int] = {}

    def revive(
        self,
        procs: dict[str, subprocess.Popen[bytes]],
        starters: dict[str, Callable[[], None]],
        logs: Path,
    ) -> None:
        """Start again each process of ``starters`` that exited (while it has attempts
        left); one with none left stays exited, for the caller's check to report."""
        for label, start in starters.items():
            proc = procs.get(label)
            if proc is None or proc.poll() is None:
                continue
            done = self.count.get(label, 1)
            if done >= self.attempts:
                continue
            self.count[label] = done + 1
            why = _last_line(logs / f"{label}.log")
            self.say(
                f"{label} exited with {proc.returncode} while starting"
                + (f" ({why})" if why else "")
                + f"; starting it again ({done + 1} of {self.attempts})"
            )
            procs.pop(label, None)
            start()
