"""A sandbox worker process: runs sandboxes for the node, and can be killed at any moment.

The node (:mod:`fades.sandbox.procs`) starts ``python -m fades.sandbox.worker RFD WFD`` and
talks to it over two pipes with length-prefixed pickled frames. The worker is part of the
node's trust domain (same code, same user); what a *function* returns is checked here, in the
worker, before it crosses (:mod:`fades.sandbox.output`), and results cross as JSON text that
the node parses again within a bound.

Requests (tuples), each answered by ``("ok", value)`` or ``("err", (class, state))``:

- ``("config", HostLimits, scratch_dir)``
- ``("prepare", Artifact)``: remember it and load its compiled form (no task budget yet); a
  Python runtime also starts the pool of ready instances (:mod:`fades.sandbox.pool`) whose
  ``/input`` is the scratch directory
- ``("run", digest, runtime_digest | None, path | blob, Limits)``: fresh instance, one
  invocation on the blob in ``path`` (the node wrote it into a RAM-backed scratch
  directory) or, for a small input, on the ``blob`` (bytes) sent in the request itself
- ``("open", digest, runtime_digest | None, input_dir, Limits)`` then ``("invoke", path)``
  and ``("close",)``: one persistent session; ``("snapshot", limit)`` answers its state
  (bytes) at an invocation boundary, ``("restore", path)`` puts the state in ``path`` back
  into the freshly opened session
- ``("stats",)``: the instance pool's counters (ready, target, hits, misses, ...) or None
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import resource
import struct
import sys
import threading
import time
from typing import Any

_HEAD = struct.Struct("<Q")


def send(fd: int, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=5)
    view = memoryview(_HEAD.pack(len(data)) + data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int) -> bytes | None:
    parts, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def recv(fd: int) -> Any:
    head = _read_exact(fd, _HEAD.size)
    if head is None:
        return None
    body = _read_exact(fd, _HEAD.unpack(head)[0])
    return None if body is None else pickle.loads(body)


def pack_error(exc: BaseException) -> tuple[type, dict[str, Any]]:
    from fades.errors import FadesError, SandboxError

    if isinstance(exc, FadesError):
        return type(exc), dict(exc.__dict__)
    text = f"sandbox worker failed: {type(exc).__name__}: {exc}"[:2000]
    return SandboxError, {"message": text, "context": {}}


def _orphan_watch(parent: int) -> None:
    """Exit when the node goes away, even while a guest blocks in a host call."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


class _Worker:
    def __init__(self) -> None:
        from fades.sandbox.base import HostLimits

        self.host = HostLimits(mode="inprocess")
        self.scratch: str | None = None
        self.artifacts: dict[str, Any] = {}
        self.session: Any = None
        self.pool: Any = None  # InstancePool for the current runtime and scratch directory

    def _python(self, runtime_digest: str) -> Any:
        from fades.sandbox.python import PythonSandbox

        sb = getattr(self, "_pysb", None)
        if sb is None or sb.runtime.digest != runtime_digest or sb.host != self.host:
            sb = self._pysb = PythonSandbox(self.artifacts[runtime_digest], self.host)
        return sb

    def _pool(self, runtime_digest: str) -> Any:
        """The pool of ready instances of this runtime (started on first use)."""
        from fades.sandbox.pool import InstancePool

        sb = self._python(runtime_digest)
        pool = self.pool
        if pool is None or pool.sandbox is not sb or pool.input_dir != self.scratch:
            if pool is not None:
                pool.close()
            h = self.host
            pool = self.pool = InstancePool(
                sb, self.scratch, min_size=h.py_pool_min, max_size=h.py_pool_max,
                max_mib=h.py_pool_max_mib,
            )  # fmt: skip
        return pool

    def _open(self, digest: str, runtime: str | None, input_dir: str, limits: Any) -> Any:
        from fades.sandbox.core import CoreSession

        art = self.artifacts[digest]
        if art.kind == "core":
            return CoreSession(art, limits, self.host)
        if runtime is None:
            raise ValueError("a Python function needs its runtime")
        if input_dir == self.scratch:  # a fresh instance, prepared ahead if one is ready
            return self._pool(runtime).session(art, limits)
        return self._python(runtime).open(art, limits, input_dir=input_dir)

    def _invoke(self, session: Any, path: str | bytes) -> dict[str, Any]:
        from fades.sandbox.core import CoreSession

        if isinstance(path, bytes):  # a small input sent inside the request
            res = session.invoke(path)
        elif isinstance(session, CoreSession):
            res = session.invoke(None, path=path)
        else:
            res = session.invoke(None)
        value = json.dumps(res.value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
        return {
            "value": value,
            "timing": res.timing,
            "bytes_in": res.bytes_in,
            "bytes_out": res.bytes_out,
            "compiled_cached": res.compiled_cached,
            "logs": res.logs,
            "start_s": session.start_s,
            # the process's peak resident memory (bytes): while it stays under the node's
            # idle bound, the node need not read the current one after the task
            "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10,
        }

    def handle(self, msg: tuple[Any, ...]) -> Any:
        op = msg[0]
        if op == "config":
            self.host, self.scratch = msg[1], msg[2]
            return os.getpid()
        if op == "prepare":
            from fades.sandbox import engine

            art = msg[1]
            if len(self.artifacts) >= 64:
                self.artifacts.pop(next(iter(self.artifacts)))
            self.artifacts[art.digest] = art
            if art.kind == "runtime":
                from fades.sandbox.python import PythonSandbox

                PythonSandbox(art, self.host).warm()
                if self.scratch is not None:
                    self._pool(art.digest)
            elif art.kind == "core":
                import wasmtime

                engine.load_compiled(wasmtime.Module, art.payload, art.payload_sha256)
            return None
        if op == "run":
            _, digest, runtime, path, limits = msg
            where = self.scratch if isinstance(path, bytes) else os.path.dirname(path)
            if isinstance(path, str):  # the node wrote an input file there
                from fades.sandbox.runcall import input_written

                input_written(os.path.dirname(path))
            session = self._open(digest, runtime, where or "", limits)
            try:
                return self._invoke(session, path)
            finally:
                session.close()
        if op == "open":
            _, digest, runtime, input_dir, limits = msg
            if self.session is not None:
                self.session.close()
            self.session = None
            self.session = self._open(digest, runtime, input_dir, limits)
            return self.session.start_s
        if op == "invoke":
            if self.session is None:
                raise ValueError("invoke without an open session")
            try:
                return self._invoke(self.session, msg[1])
            except BaseException:
                self.session.close()  # a trapped instance cannot be re-entered
                self.session = None
                raise
        if op == "snapshot":
            if self.session is None:
                raise ValueError("snapshot without an open session")
            return bytes(self.session.snapshot(msg[1]))
        if op == "restore":
            if self.session is None:
                raise ValueError("restore without an open session")
            with open(msg[1], "rb") as f:
                state = f.read()
            self.session.restore(state)
            return None
        if op == "stats":  # the instance pool's counters (benchmarks, tests)
            return None if self.pool is None else self.pool.stats()
        if op == "close":
            if self.session is not None:
                self.session.close()
                self.session = None
            return None
        raise ValueError(f"unknown request {op!r}")


def main(argv: list[str]) -> int:
    rfd, wfd = int(argv[1]), int(argv[2])
    threading.Thread(target=_orphan_watch, args=(os.getppid(),), daemon=True).start()
    worker = _Worker()
    try:
        send(wfd, ("ready", os.getpid()))
        while True:
            msg = recv(rfd)
            if msg is None or msg[0] == "exit":
                return 0
            pool = worker.pool
            try:
                with pool.busy() if pool is not None else contextlib.nullcontext():
                    reply: tuple[str, Any] = ("ok", worker.handle(msg))
            except Exception as exc:
                reply = ("err", pack_error(exc))
            send(wfd, reply)
    except OSError:  # the node went away (closed our pipes): nothing left to do
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
