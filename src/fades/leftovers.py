"""Processes a killed ``fades up`` left behind in its folder, found and stopped.

``fades up`` starts its nats-servers, controllers and node agents in their own sessions (so
Ctrl-C reaches ``fades up`` alone, which then stops them in order). When ``fades up`` itself is
killed with SIGKILL it cannot stop them: they keep running, without a supervisor, on a folder
that the next ``fades up`` deletes and makes again. The next start, once it holds the
folder's lock (so no live ``fades up`` owns them), finds them here by their command lines and
stops them before it touches the folder.

Only nats-server and ``fades`` processes whose command line names a path inside the folder are
taken; anything else that mentions it (an editor, ``tail -f`` on a log) is left alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

#: how long a leftover process gets to stop after SIGTERM before it is killed
STOP_TIMEOUT_S = 10.0


def _is_fades_part(args: list[str]) -> bool:
    """A nats-server, or a Python running fades (``python -m fades ...`` or ``fades ...``)."""
    if not args:
        return False
    exe = os.path.basename(args[0])
    if exe.startswith("nats-server") or exe == "fades":
        return True
    return exe.startswith("python") and len(args) > 2 and args[1:3] == ["-m", "fades"]


def _names_folder(args: list[str], folder: str) -> bool:
    inside = folder.rstrip("/") + "/"
    for arg in args:
        value = arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else arg
        if value == folder or value.startswith(inside):
            return True
    return False


def find_leftovers(folder: Path) -> list[tuple[int, str]]:
    """``(pid, command line)`` of each live fades part that works in ``folder`` (not us)."""
    wanted = str(folder.resolve())
    found: list[tuple[int, str]] = []
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: nothing to find this way
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        args = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
        if _is_fades_part(args) and _names_folder(args, wanted):
            found.append((int(entry.name), " ".join(args)))
    return sorted(found)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (not yet reaped by its parent) is stopped for our purpose
        return (Path("/proc") / str(pid) / "stat").read_text().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


def stop_leftovers(pids: list[int], timeout: float = STOP_TIMEOUT_S) -> list[int]:
    """SIGTERM each of ``pids``, SIGKILL what still runs after ``timeout`` seconds.

    Returns the pids that could not be stopped (not ours to signal)."""
    stuck: list[int] = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        except PermissionError:
            stuck.append(pid)
    deadline = time.monotonic() + timeout
    waiting = [p for p in pids if p not in stuck]
    while waiting and time.monotonic() < deadline:
        waiting = [p for p in waiting if _alive(p)]
        if waiting:
            time.sleep(0.05)
    for pid in waiting:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return stuck
