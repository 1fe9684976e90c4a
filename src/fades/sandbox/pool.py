"""Fresh Python runtime instances prepared ahead, so a task does not wait for one.

Every task still gets a brand-new instance that nothing ran in before (no state passes from
one task or tenant to the next): the pool only moves the instantiation, and the first-call
page faults of the runtime's memory image, off the request path. A thread refills the pool
once its process has had no task running for :data:`IDLE_S`, and closes surplus instances
when demand falls.

- **Preparation**: the runtime component is instantiated (wasmtime maps its initial memory
  copy-on-write) and then *warmed*: one call of the runtime's own warm-up on a tiny built-in
  input (decode, compile, call, encode) with no function in it. Instantiation alone halves
  the cost a task sees; the warm-up takes the rest of the first-call faults away. While
  tasks keep the process busy (:data:`LEAN_BUSY_FRACTION`), instances are prepared without
  the warm-up: it costs more CPU than it saves the task, and the CPU is what is short then.
- **Limits**: a pooled instance is prepared under a :data:`~fades.sandbox.python.
  MIN_MEMORY_MIB` cap (below any task's) and gets the task's own memory cap and time
  deadline when a task takes it (:class:`~fades.sandbox.python.PythonSession`).
- **Size**: between ``min_size`` and ``max_size`` ready instances. A task that finds the
  pool empty waits for the instance being prepared, if one is; otherwise (a miss) it makes
  its own and raises the target by one; ``shrink_s`` without a miss lowers it by
  one. The pool never holds more than ``max_mib`` of memory, at the size (growth of the
  process's PSS, ``/proc/self/smaps_rollup``) measured while it prepared its instances.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from fades.broker.base import CATEGORICAL, Dataset
from fades.errors import FadesError
from fades.functions.artifact import Artifact
from fades.sandbox.base import HostLimits, Limits
from fades.sandbox.python import MIN_MEMORY_MIB, PythonSandbox, PythonSession, RuntimeInstance
from fades.sandbox.wire import encode

#: Without a miss for this long, the pool's target shrinks by one instance.
SHRINK_S = 30.0
#: A task that finds the pool empty while an instance is being prepared waits this long
#: for it at most (preparing one takes a few ms), rather than making a second one.
TAKE_WAIT_S = 0.25
#: The memory of this many preparations is measured (the median is used from then on).
MEASURED_PREPARES = 7
#: The pool prepares only after its process has had no task running for this long: under
#: back-to-back tasks there is no idle time to hide the preparation in, and it would only
#: compete with the tasks.
IDLE_S = 0.01
#: Until the pool has measured one, an instance is assumed to cost this much memory.
ASSUMED_INSTANCE_BYTES = 8 << 20
#: When tasks kept the process busy more than this fraction of the last :data:`BUSY_WINDOW_S`,
#: instances are prepared *lean* (no warm-up call): the warm-up moves about 2 ms of a task's
#: first-call work ahead but costs about 4 ms of CPU itself, which under sustained load only
#: competes with the tasks (measured with ``benchmarks/bench_pool.py``).
LEAN_BUSY_FRACTION = 0.5
BUSY_WINDOW_S = 1.0


POOL_SETTINGS = ("min", "max", "max_mib")


def host_limits(
    python_pool: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None
) -> HostLimits:
    """The node's sandbox bounds: defaults, then ``python_pool`` from ``node.yaml``
    (``min``, ``max``, ``max_mib``), then ``FADES_SANDBOX_*`` variables, which win."""
    env = dict(os.environ if environ is None else environ)
    for key, value in (python_pool or {}).items():
        if key not in POOL_SETTINGS:
            known = ", ".join(POOL_SETTINGS)
            raise ValueError(f"node.yaml python_pool: unknown setting {key!r} (known: {known})")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"node.yaml python_pool.{key} must be an integer >= 0, not {value!r}")
        env.setdefault(f"FADES_SANDBOX_PY_POOL_{key.upper()}", str(value))
    return HostLimits.from_env(env)


def warm_blob() -> bytes:
    """The tiny FDS1 input of the warm-up call (ten readings, no parameters)."""
    n = 10
    ds = Dataset(
        ts=np.arange(n, dtype=np.float64),
        value=np.arange(n, dtype=np.float64),
        codes={c: np.zeros(n, np.uint16) for c in CATEGORICAL},
        labels={c: ["x"] for c in CATEGORICAL},
        units={"x": "C"},
    )
    return bytes(encode({"d": ds}, {"warm": True}))


def _pss_bytes() -> int:
    """This process's proportional set size (its share of shared pages counted)."""
    try:
        with open("/proc/self/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) << 10
    except (OSError, IndexError, ValueError):
        pass
    return 0


class InstancePool:
    """Ready, never-used runtime instances of one runtime for one input directory.

    Args:
        sandbox: the runtime's sandbox (its compiled component and linker).
        input_dir: the directory preopened as ``/input`` in every instance (the worker's
            scratch directory); None: each instance gets a private one.
        min_size, max_size: bounds of the number of ready instances (0, 0: no pool).
        max_mib: memory the ready instances may hold together.
        warm: run the warm-up call on each prepared instance (False: instantiate only).
    """

    def __init__(
        self,
        sandbox: PythonSandbox,
        input_dir: str | None,
        *,
        min_size: int,
        max_size: int,
        max_mib: int,
        shrink_s: float = SHRINK_S,
        warm: bool = True,
        bind: bool = True,
    ) -> None:
        if not 0 <= min_size <= max_size:
            raise ValueError(f"pool bounds need 0 <= min <= max, not {min_size}, {max_size}")
        if max_mib < 0:
            raise ValueError(f"pool memory must be at least 0 MiB, not {max_mib}")
        self.sandbox, self.input_dir = sandbox, input_dir
        self.min_size, self.max_size, self.max_mib = min_size, max_size, max_mib
        self.shrink_s = shrink_s
        self.target = min_size
        self.instance_bytes = 0  # measured on the first preparation
        self.hits = self.misses = self.prepared = self.bound_hits = 0
        self.prepare_s: list[float] = []
        self._grew: list[int] = []
        self._ready: list[RuntimeInstance] = []
        self._used: list[RuntimeInstance] = []
        self._busy = 0
        self._busy_from = 0.0  # when the current busy stretch began
        self._spans: list[tuple[float, float]] = []  # recent busy stretches (start, end)
        self.lean = 0  # instances prepared without the warm-up (the process was busy)
        self._preparing = False
        self._idle_since = 0.0
        self._closed = False
        self._last_miss = time.monotonic()
        self._cond = threading.Condition()
        self._blob = warm_blob() if warm else b""
        self.bind = bind
        #: the function the last task ran (instances are prepared bound to it) and its limits
        self._hot: tuple[Artifact, Limits] | None = None
        self._unbindable: set[str] = set()  # functions whose module failed to load ahead
        self._last: str | None = None  # the function of the last task
        self._thread: threading.Thread | None = None
        if max_size > 0:
            self._thread = threading.Thread(target=self._refill, name="fades-pool", daemon=True)
            self._thread.start()

    # --- the request path -----------------------------------------------------------------
    def take(self, busy: bool = False, digest: str | None = None) -> RuntimeInstance | None:
        """A ready instance (removed from the pool), or None when there is none (a miss).

        ``busy``: also mark a task as running, in the same step, so that the refill thread
        woken by the take does not start preparing beside the task (the session's release
        unmarks it). ``digest``: the function the instance is for; an instance bound to it is
        preferred, one bound to another function is never given."""
        with self._cond:
            if busy and self._thread is not None:
                self._enter()
            if not self._ready and self._preparing:
                # one is on its way with a head start: waiting for it beats making another
                self._cond.wait_for(
                    lambda: self._ready or not self._preparing or self._closed, TAKE_WAIT_S
                )
            inst = _pick(self._ready, digest)
            if inst is not None:
                self.hits += 1
                self.bound_hits += inst.bound is not None
            else:
                inst = None
                if self.max_size > 0:
                    self.misses += 1
                    self._last_miss = time.monotonic()
                    self.target = min(self.max_size, self.target + 1)
                    self._cond.notify_all()  # the refill thread: a higher target
            # a hit wakes nobody: the refill thread would only find the task running (the
            # session's release wakes it), and waking it costs the task a thread switch
        return inst

    def session(self, artifact: Artifact, limits: Limits) -> PythonSession:
        """A session for one task on a pooled instance, or on a new one if none is ready."""
        with self._cond:  # a streak of one function: prepare the next ones with it loaded
            streak = self._last == artifact.digest and artifact.digest not in self._unbindable
            self._hot = (artifact, limits) if self.bind and streak else None
            self._last = artifact.digest
        # no preparing while the session runs: it would compete
        inst = self.take(busy=True, digest=artifact.digest)
        try:
            session = self.sandbox.open(artifact, limits, self.input_dir, inst)
        except BaseException:
            if inst is not None:
                inst.close()
            if self._thread is not None:
                with self._cond:
                    self._leave()
                    self._cond.notify_all()
            raise
        if self._thread is not None:
            session.release = self._discard
        return session

    def _discard(self, inst: RuntimeInstance) -> None:
        """A used instance: the refill thread destroys it (at once, busy or not), so the
        task's reply does not wait for its memory to be unmapped."""
        with self._cond:
            self._leave()
            self._cond.notify_all()
            if not self._closed:
                self._used.append(inst)
                return
        inst.close()

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Mark a task as running: the pool does not start preparing while one runs."""
        with self._cond:
            self._enter()
        try:
            yield
        finally:
            with self._cond:
                self._leave()
                self._cond.notify_all()

    def _enter(self) -> None:  # with self._cond held
        if self._busy == 0:
            self._busy_from = time.monotonic()
        self._busy += 1

    def _leave(self) -> None:  # with self._cond held
        self._busy -= 1
        if self._busy == 0:
            now = self._idle_since = time.monotonic()
            self._spans.append((self._busy_from, now))
            while self._spans and self._spans[0][1] < now - BUSY_WINDOW_S:
                del self._spans[0]

    def busy_fraction(self, now: float | None = None) -> float:
        """The fraction of the last :data:`BUSY_WINDOW_S` this process spent running tasks."""
        with self._cond:
            now = time.monotonic() if now is None else now
            start = now - BUSY_WINDOW_S
            spent = sum(max(0.0, b - max(a, start)) for a, b in self._spans)
            if self._busy:
                spent += now - max(self._busy_from, start)
            return min(1.0, spent / BUSY_WINDOW_S)

    # --- the refill thread ----------------------------------------------------------------
    def cap(self) -> int:
        """How many instances the pool may hold now: the target, within the memory cap."""
        per = self.instance_bytes or ASSUMED_INSTANCE_BYTES
        return max(0, min(self.target, (self.max_mib << 20) // per))

    def _refill(self) -> None:
        while True:
            surplus: list[RuntimeInstance] = []
            with self._cond:
                while not self._closed:
                    if self._used:
                        surplus, self._used = self._used, []
                        break
                    now = time.monotonic()
                    if self.target > self.min_size and now - self._last_miss > self.shrink_s:
                        self.target -= 1
                        self._last_miss = now  # one step per quiet period
                    cap = self.cap()
                    hot = self._hot[0].digest if self._hot is not None else None
                    stale = [i for i in self._ready if i.bound not in (None, hot)]
                    if stale:  # bound to a function no longer run here
                        self._ready = [i for i in self._ready if i not in stale]
                        surplus = stale
                        break
                    if len(self._ready) > cap:
                        surplus, self._ready = self._ready[cap:], self._ready[:cap]
                        break
                    idle = now - self._idle_since
                    if len(self._ready) < cap and not self._busy and idle >= IDLE_S:
                        break
                    wait = IDLE_S - idle if len(self._ready) < cap and not self._busy else 5.0
                    self._cond.wait(timeout=min(self.shrink_s, max(wait, 0.001)))
                if self._closed:
                    return
            if surplus:
                for inst in surplus:
                    inst.close()
                continue
            with self._cond:
                self._preparing = True
            try:
                ok = self._prepare_one()
            finally:
                with self._cond:
                    self._preparing = False
                    self._cond.notify_all()
            if not ok:
                time.sleep(1.0)  # the runtime cannot be prepared now: tasks make their own

    def _prepare_one(self) -> bool:
        measure = len(self._grew) < MEASURED_PREPARES  # reading smaps costs ~0.5 ms: a few
        before = _pss_bytes() if measure else 0
        lean = bool(self._blob) and self.busy_fraction() > LEAN_BUSY_FRACTION
        try:
            inst = RuntimeInstance(
                self.sandbox, self.input_dir, MIN_MEMORY_MIB << 20, warm=b"" if lean else self._blob
            )
        except (FadesError, OSError):
            return False
        with self._cond:  # one unbound instance stays ready for any other function
            hot = self._hot
            if self.cap() > 1 and not any(i.bound is None for i in self._ready):
                hot = None
        if hot is not None:
            try:
                inst.bind(*hot)
            except FadesError:  # e.g. its module needs the task's data: prepare it unbound
                with self._cond:
                    if len(self._unbindable) < 256:
                        self._unbindable.add(hot[0].digest)
                    if self._hot is hot:
                        self._hot = None
                return True
        grew = _pss_bytes() - before if measure else 0
        with self._cond:
            if grew > 0:  # a task running meanwhile can blur one sample: take the median
                self._grew.append(grew)
                del self._grew[:-15]
                self.instance_bytes = sorted(self._grew)[len(self._grew) // 2]
            self.prepared += 1
            self.lean += lean
            self.prepare_s.append(inst.prepare_s)
            del self.prepare_s[:-100]
            if not self._closed:
                self._ready.append(inst)
                self._cond.notify_all()
                return True
        inst.close()
        return True

    def wait_ready(
        self, n: int = 1, timeout: float = 60.0, bound: str | None = None, usable: str = ""
    ) -> bool:
        """Wait until ``n`` instances are ready (tests, benchmarks): any, or with ``bound``
        loaded for that function, or ``usable`` by that function (unbound or bound to it)."""
        deadline = time.monotonic() + timeout

        def ok(i: RuntimeInstance) -> bool:
            if bound is not None:
                return i.bound == bound
            return not usable or i.bound in (None, usable)

        with self._cond:
            while sum(ok(i) for i in self._ready) < n:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return False
                self._cond.wait(left)
        return True

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {
                "ready": len(self._ready),
                "target": self.target,
                "cap": self.cap(),
                "hits": self.hits,
                "bound_hits": self.bound_hits,
                "bound": sum(i.bound is not None for i in self._ready),
                "misses": self.misses,
                "prepared": self.prepared,
                "lean": self.lean,
                "busy_fraction": round(self.busy_fraction(), 3),
                "instance_bytes": self.instance_bytes,
            }

    def close(self) -> None:
        with self._cond:
            self._closed = True
            ready, self._ready = self._ready + self._used, []
            self._used = []
            self._cond.notify_all()
        for inst in ready:
            inst.close()


def _pick(ready: list[RuntimeInstance], digest: str | None) -> RuntimeInstance | None:
    """Remove and return the ready instance for ``digest``: bound to it, else unbound."""
    for want in (digest, None) if digest is not None else (None,):
        for k in range(len(ready) - 1, -1, -1):
            if ready[k].bound == want:
                return ready.pop(k)
    return None
