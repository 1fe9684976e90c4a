"""Sandboxes in worker processes that the node kills when a task overruns.

Epoch interruption stops a function that computes, not one that blocks in a host call
(``time.sleep(1e9)`` in Python waits inside WASI). So the node runs every sandbox in a worker
process (:mod:`fades.sandbox.worker`) and enforces each task's bounds from outside:

- **time**: the worker is SIGKILLed when the task runs ``time_budget_ms + grace_ms`` of wall
  clock; the task fails with TimeLimitExceeded and a fresh worker takes the dead one's place;
- **host memory**: while waiting, the node polls the worker's ``/proc/<pid>/statm`` and kills
  it when its anonymous RSS passes the task's ``memory_mib + worker_overhead_mib``
  (MemoryLimitExceeded);
- **crashes**: a worker that dies (segfault, OOM killer) fails its task with FunctionCrashed;
- **leaks**: a worker is replaced after ``worker_max_tasks`` tasks or when it sits idle with
  more than ``worker_max_idle_rss_mib`` of anonymous RSS.

The blob is handed over as a file in a RAM-backed scratch directory per worker: the node
writes it once, a Python guest reads it from its preopened ``/input``, a core module has it
read straight into its linear memory.

About 450 lines: the pool, a worker's lifecycle and the watchdog (deadline, RSS) share the
worker records and their lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from fades.errors import (
    FadesError,
    FunctionCrashed,
    MemoryLimitExceeded,
    SandboxError,
    TimeLimitExceeded,
)
from fades.functions.artifact import Artifact
from fades.sandbox.base import HostLimits, Limits, SandboxResult, write_input
from fades.sandbox.worker import _HEAD, send

#: Inputs up to this size go to a worker inside the request rather than as a file.
INLINE_MAX_BYTES = 64 << 10
#: Starting a worker, and preparing an artifact in it (the first compile of a module or of
#: the Python runtime), are not part of any task's budget, but are bounded too.
STARTUP_S = 120.0
POLL_S = 0.01
_PAGE = os.sysconf("SC_PAGE_SIZE")
_SRC = str(Path(__file__).resolve().parents[2])
_MAIN = "import sys; from fades.sandbox.worker import main; sys.exit(main(sys.argv))"


def _scratch_root() -> str:
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()


class _Killed(Exception):
    def __init__(self, error: SandboxError) -> None:
        self.error = error


class Worker:
    """One worker process and its pipes. Used by one thread at a time."""

    def __init__(self, host: HostLimits) -> None:
        self.host = host
        to_child, self._w = os.pipe()
        self._r, from_child = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC, env.get("PYTHONPATH")) if p)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _MAIN, str(to_child), str(from_child)],
                pass_fds=(to_child, from_child),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
            )
        except OSError as exc:
            os.close(self._w)
            os.close(self._r)
            raise SandboxError(f"could not start a sandbox process: {exc}") from None
        finally:  # the child's ends: it has its own copies now
            os.close(to_child)
            os.close(from_child)
        self.scratch = tempfile.mkdtemp(prefix=f"fades-w{self.proc.pid}-", dir=_scratch_root())
        self.input = os.path.join(self.scratch, "data.fds")
        self.known: set[str] = set()
        self.tasks = 0
        #: the peak resident memory the worker reported with its last answer (bytes; None:
        #: unknown): below the idle bound, the current resident memory is too
        self.peak_rss: int | None = None
        self._statm: int | None = None  # the open /proc/<pid>/statm (see anon_rss)
        self._statm_lock = threading.Lock()
        self.dead = False
        self._pending = 2  # "ready", then the answer to "config"
        self._send(("config", host, self.scratch))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def anon_rss(self) -> int:
        """Anonymous resident memory (resident minus file-backed and shared), in bytes.

        ``/proc/<pid>/statm`` stays open and is re-read in place (one system call: the
        watchdog reads it every :data:`POLL_S` while a task runs)."""
        if self.dead:
            return 0
        try:
            fd = self._statm
            if fd is None:
                fd = os.open(f"/proc/{self.proc.pid}/statm", os.O_RDONLY)
                with self._statm_lock:  # kill() (another thread) closes what it finds here
                    if self.dead:
                        os.close(fd)
                        return 0
                    self._statm = fd
            fields = os.pread(fd, 256, 0).split()
            return (int(fields[1]) - int(fields[2])) * _PAGE
        except (OSError, IndexError, ValueError):
            return 0

    def _send(self, msg: Any) -> None:
        try:
            send(self._w, msg)
        except OSError as exc:
            raise self._died(f"could not be reached ({exc.strerror})") from None

    def _died(self, why: str | None = None) -> SandboxError:
        self.kill()
        code = self.proc.returncode
        if why is None:
            if code is not None and code < 0:
                name = signal.Signals(-code).name
                oom = " (the host's OOM killer?)" if -code == signal.SIGKILL else ""
                why = f"was killed by {name}{oom}"
            else:
                why = f"exited with status {code}"
        return FunctionCrashed(f"the sandbox process {why}; the node started a fresh one")

    def _settle(self) -> None:
        """Collect the answers to requests sent ahead (start-up, config, prepare)."""
        while self._pending:
            status, value = self._wait(time.monotonic() + STARTUP_S, None, startup=True)
            self._pending -= 1
            if status == "err":
                raise _rebuild(value)

    def call(self, msg: Any, deadline: float | None = None, limits: Limits | None = None) -> Any:
        """Send ``msg`` and wait for the answer; ``limits`` bound the wait and the RSS."""
        self._settle()
        self._send(msg)
        status, value = self._wait(
            deadline if deadline is not None else time.monotonic() + STARTUP_S, limits
        )
        if status == "err":
            raise _rebuild(value)
        return value

    def prepare(self, artifact: Artifact) -> None:
        if artifact.digest not in self.known:
            self.call(("prepare", artifact))
            self.known.add(artifact.digest)

    def _wait(
        self, deadline: float, limits: Limits | None, startup: bool = False
    ) -> tuple[str, Any]:
        buf = bytearray()
        need = _HEAD.size
        have_head = False
        cap = None
        if limits is not None:
            cap = (limits.memory_mib + self.host.worker_overhead_mib) << 20
        poller = select.poll()
        poller.register(self._r, select.POLLIN | select.POLLHUP)
        while True:
            while len(buf) < need:
                now = time.monotonic()
                if now >= deadline:
                    if limits is None:
                        raise self._died("did not answer in time" if startup else None)
                    self.kill()
                    raise TimeLimitExceeded(
                        limits.time_budget_ms,
                        detail=f"the sandbox process was killed after "
                        f"{limits.time_budget_ms} + {self.host.grace_ms} ms",
                    )
                try:
                    # another thread may kill this worker (the pool closing) and close its
                    # pipe under us: that is a dead worker, not an OSError for the caller
                    if self.dead:
                        raise OSError("the worker was killed")
                    ready = poller.poll(min(deadline - now, POLL_S) * 1000)
                    chunk = os.read(self._r, min(need - len(buf), 1 << 20)) if ready else None
                except OSError:
                    raise self._died() from None
                if chunk is None:
                    if cap is not None and limits is not None and self.anon_rss() > cap:
                        self.kill()
                        raise MemoryLimitExceeded(
                            limits.memory_mib,
                            detail=f"the sandbox process used more than {cap >> 20} MiB "
                            f"of host memory ({limits.memory_mib} MiB + "
                            f"{self.host.worker_overhead_mib} MiB overhead)",
                        )
                    continue
                if not chunk:
                    self.proc.wait()
                    raise self._died()
                buf += chunk
            if have_head:
                status, value = _loads(bytes(buf[_HEAD.size :]))
                return status, value
            size = _HEAD.unpack(bytes(buf[: _HEAD.size]))[0]
            if size > 4 * self.host.max_result_bytes + (16 << 20):
                raise self._died(f"sent a {size}-byte answer")
            need = _HEAD.size + size
            have_head = True

    def kill(self) -> None:
        """SIGKILL the process and release its pipes and scratch directory (idempotent)."""
        if self.dead:
            return
        self.dead = True
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()
        with self._statm_lock:
            statm, self._statm = self._statm, None
        for fd in (self._r, self._w, statm):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        shutil.rmtree(self.scratch, ignore_errors=True)

    def stale(self) -> bool:
        """Worn out: replace it rather than reuse it."""
        h = self.host
        return (
            self.dead
            or self.proc.poll() is not None
            or self.tasks >= h.worker_max_tasks
            or (
                (self.peak_rss is None or self.peak_rss > h.worker_max_idle_rss_mib << 20)
                and self.anon_rss() > h.worker_max_idle_rss_mib << 20
            )
        )


def _loads(body: bytes) -> tuple[str, Any]:
    import pickle

    status, value = pickle.loads(body)
    return str(status), value


def _rebuild(packed: tuple[type, dict[str, Any]]) -> FadesError:
    cls, state = packed
    if not (isinstance(cls, type) and issubclass(cls, FadesError)):
        cls, state = SandboxError, {"message": "the sandbox process sent a malformed error"}
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("message", ""))
    err.__dict__.update(state)
    err.__dict__.setdefault("message", "")
    err.__dict__.setdefault("context", {})
    return err


def _result(reply: dict[str, Any], limit: int) -> SandboxResult:
    text = reply["value"]
    if not isinstance(text, str) or len(text) > 2 * limit:
        raise SandboxError("the sandbox process returned a malformed result")
    return SandboxResult(
        value=json.loads(text),
        timing=dict(reply["timing"]),
        bytes_in=int(reply["bytes_in"]),
        bytes_out=int(reply["bytes_out"]),
        compiled_cached=bool(reply["compiled_cached"]),
        logs=str(reply["logs"]),
    )


def _deadline(limits: Limits, host: HostLimits) -> float:
    return time.monotonic() + (limits.time_budget_ms + host.grace_ms) / 1000


def _write_blob(path: str, blob: bytes | bytearray) -> None:
    try:
        write_input(path, blob)
    except OSError as exc:  # e.g. /dev/shm full: the node's problem, said plainly
        raise SandboxError(
            f"could not hand the {len(blob)}-byte input to the sandbox: {exc.strerror}"
        ) from None


class WorkerPool:
    """``size`` pre-started workers for one-shot tasks; a broken or worn worker is replaced."""

    def __init__(self, size: int, host: HostLimits) -> None:
        if size < 1:
            raise ValueError(f"a worker pool needs at least one worker, not {size}")
        self.host = host
        self._cond = threading.Condition()
        self._idle: list[Worker] = [Worker(host) for _ in range(size)]
        self._all = list(self._idle)
        self._runtime: Artifact | None = None
        self._closed = False
        self._starting = 0

    def warm(self, runtime: Artifact) -> None:
        """Have every idle worker load the Python runtime now (and any new worker later)."""
        self._runtime = runtime
        with self._cond:
            idle = list(self._idle)
        for w in idle:
            with contextlib.suppress(SandboxError):
                w.prepare(runtime)

    def _replace(self) -> None:
        """Start a worker (and load the runtime into it) off the task's path, then add it."""
        w: Worker | None = None
        try:
            w = Worker(self.host)
            if self._runtime is not None:
                w.prepare(self._runtime)
        except (FadesError, OSError):
            if w is not None:
                w.kill()
            self._replacing(-1)
            time.sleep(1.0)  # could not start one: try again, never leave the pool short
            threading.Thread(target=self._replace, daemon=True).start()
            return
        self._add(w)
        self._replacing(-1)

    def _replacing(self, n: int) -> None:
        with self._cond:
            self._starting += n

    def run(
        self, artifact: Artifact, runtime: Artifact | None, blob: bytes | bytearray, limits: Limits
    ) -> SandboxResult:
        with self._cond:
            while not self._idle:
                if self._closed:
                    raise SandboxError("the node's sandboxes are shut down")
                self._cond.wait()
            w = self._idle.pop()
        try:
            if runtime is not None:
                w.prepare(runtime)
            w.prepare(artifact)
            rt = runtime.digest if runtime is not None else None
            where: str | bytes = w.input
            if len(blob) <= INLINE_MAX_BYTES:
                where = bytes(blob)  # in the request itself: no file to write and read back
            else:
                _write_blob(w.input, blob)
            w.peak_rss = None  # unknown unless this task's answer says
            reply = w.call(
                ("run", artifact.digest, rt, where, limits), _deadline(limits, self.host), limits
            )
            w.tasks += 1
            peak = reply.get("maxrss")
            w.peak_rss = peak if isinstance(peak, int) else None
            return _result(reply, self.host.max_result_bytes)
        except FunctionCrashed:
            if self._closed:  # close() killed it: say so, not "crashed"
                raise SandboxError("the node shut down while the function ran") from None
            raise
        finally:
            self._release(w)

    def _release(self, w: Worker) -> None:
        if w.stale():
            w.kill()
            self._replacing(+1)
            threading.Thread(target=self._replace, name="fades-worker-start", daemon=True).start()
            return
        self._add(w)

    def _add(self, w: Worker) -> None:
        with self._cond:
            if self._closed:
                w.kill()
                return
            self._all = [x for x in self._all if not x.dead and x is not w] + [w]
            self._idle.append(w)
            self._cond.notify()

    def pids(self) -> list[int]:
        with self._cond:
            return [w.pid for w in self._all if not w.dead]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            workers, self._all, self._idle = self._all, [], []
            self._cond.notify_all()
        for w in workers:
            w.kill()


class ProcSession:
    """A persistent session in a dedicated worker process (see ``Sandboxes.open``)."""

    def __init__(
        self,
        host: HostLimits,
        artifact: Artifact,
        runtime: Artifact | None,
        limits: Limits,
        restore: bytes | None = None,
    ) -> None:
        self.host, self.limits = host, limits
        # one instance for the session's life: no pool of ready ones beside it
        self.worker = w = Worker(dataclasses.replace(host, py_pool_min=0, py_pool_max=0))
        self.invocations = 0
        try:
            if runtime is not None:
                w.prepare(runtime)
            w.prepare(artifact)
            rt = runtime.digest if runtime is not None else None
            self.start_s = float(
                w.call(
                    ("open", artifact.digest, rt, w.scratch, limits),
                    _deadline(limits, host),
                    limits,
                )
            )
            if restore is not None:
                self.restore(restore)
        except BaseException:
            w.kill()
            raise

    def invoke(self, blob: bytes | bytearray) -> SandboxResult:
        w = self.worker
        if w.dead:
            raise SandboxError("this session's sandbox process is gone; open a new session")
        _write_blob(w.input, blob)
        reply = w.call(("invoke", w.input), _deadline(self.limits, self.host), self.limits)
        res = _result(reply, self.host.max_result_bytes)
        if self.invocations:
            res.timing["start"] = 0.0
        self.invocations += 1
        return res

    def snapshot(self, limit: int | None = None) -> bytes:
        """The session's state at this invocation boundary (captured in the worker)."""
        w = self.worker
        if w.dead:
            raise SandboxError("this session's sandbox process is gone; open a new session")
        state = w.call(("snapshot", limit), _deadline(self.limits, self.host), self.limits)
        if not isinstance(state, bytes):
            raise SandboxError("the sandbox process returned a malformed snapshot")
        return state

    def restore(self, state: bytes) -> None:
        """Put a snapshot back into this fresh session (in the worker)."""
        if self.invocations:
            raise ValueError("restore() needs a fresh session (this one already ran)")
        w = self.worker
        path = os.path.join(w.scratch, "state.in")
        _write_blob(path, state)
        w.call(("restore", path), _deadline(self.limits, self.host), self.limits)

    def close(self) -> None:
        self.worker.kill()

    def __enter__(self) -> ProcSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
