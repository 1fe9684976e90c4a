"""``fades fn test``: run a function once, in a real sandbox, on sample data, like a script.

:func:`run_local` builds the source through the same checks as ``fades fn build`` (an import
the sandbox lacks, a syntax error: the same one-line error with its line), signs it with a
throw-away key that only an in-memory trust store knows, and runs it as a one-shot task
through a node's own :class:`~fades.node.orchestrator.Orchestrator` (the same
:class:`~fades.sandbox.Sandboxes`, data broker, limits and outcome) in a temporary folder
that is removed afterwards. Nothing is installed, no key is written to the user's folders and
no task file is needed.

Sample data (:class:`Sample`): the synthetic office testbed generated into the temporary
folder (the default), a CSV file (the CSV connector), or a node's own store (``--home``).

The Python runtime is the cached signed one of :func:`fades.functions.build.build_runtime`,
signed once by a key kept in ``FADES_CACHE/fn-test`` (so its digest, its signed copy and its
compiled form are reused from one run to the next).
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from fades import paths
from fades.broker import DataBroker, SQLiteConnector
from fades.broker.base import Connector
from fades.errors import ConnectorError
from fades.functions.artifact import Artifact
from fades.functions.build import build_function, build_runtime
from fades.functions.keys import SigningKey, TrustStore
from fades.functions.store import FunctionStore
from fades.outcome import Outcome

__all__ = ["DEFAULT_MEMORY_MIB", "DEFAULT_TIME_BUDGET_MS", "Sample", "run_local"]

#: The node's defaults for a task that does not say (``fades.task.FunctionSpec``).
DEFAULT_MEMORY_MIB = 64
DEFAULT_TIME_BUDGET_MS = 5000
#: The node name a local run reports in its outcome.
LOCAL_NODE = "local"
#: Extra seconds the run waits beyond the time budget (data generation, worker start).
_GRACE_S = 120.0


@dataclass(frozen=True, slots=True)
class Sample:
    """Where the sample data comes from, and which of it the function sees.

    Attributes:
        source: ``testbed`` (generated), ``csv`` (``path`` is the file) or ``home`` (``path``
            is a node folder; its ``readings.db`` is read, never written).
        days, rate_s, seed: the generated testbed's length, reading interval and seed.
        location, sensor_type, last_seconds: the selection (unset: everything).
        name: the name under which the function sees the dataset (``data[name]``).
        allow_empty: run the function on an empty selection instead of failing with NoData.
    """

    source: Literal["testbed", "csv", "home"] = "testbed"
    path: Path | None = None
    days: float = 1.0
    rate_s: float = 60.0
    seed: int = 0
    location: tuple[str, ...] = ()
    sensor_type: tuple[str, ...] = ()
    last_seconds: float | None = None
    name: str = "readings"
    allow_empty: bool = False

    def select(self) -> dict[str, Any]:
        sel: dict[str, Any] = {}
        if self.location:
            sel["location"] = list(self.location)
        if self.sensor_type:
            sel["sensor_type"] = list(self.sensor_type)
        if self.last_seconds is not None:
            sel["last_seconds"] = self.last_seconds
        return sel


def _runtime_key() -> SigningKey:
    """The key that signs the cached runtime for local runs (made once, kept in the cache)."""
    folder = paths.cache() / "fn-test"
    path = folder / "fn-test.key"
    if path.exists():
        try:
            return SigningKey.load(path)
        except Exception:  # a damaged key is replaced: it guards nothing but this cache
            path.unlink(missing_ok=True)
    (folder / "fn-test.pub").unlink(missing_ok=True)
    with contextlib.suppress(FileExistsError):  # another run made it first
        SigningKey.generate("fn-test").save(folder)
    return SigningKey.load(path)


def _connector(sample: Sample, tmp: Path) -> tuple[str, Connector]:
    """The connector name the task uses, and the connector holding the sample data."""
    if sample.source == "csv":
        from fades.broker import CSVConnector

        if sample.path is None or not sample.path.is_file():
            raise ConnectorError(f"no CSV file at {sample.path}", connector="csv")
        return "csv", CSVConnector(sample.path)
    if sample.source == "home":
        if sample.path is None or not (sample.path / "readings.db").is_file():
            raise ConnectorError(
                f"no node store at {sample.path}/readings.db; pass a node folder with --home "
                f"(or generate data with 'fades data generate')",
                connector="sqlite",
            )
        return "sqlite", SQLiteConnector(sample.path / "readings.db")
    from fades.testbed import populate

    store = SQLiteConnector(tmp / "readings.db")
    types = list(sample.sensor_type) or None
    start = datetime.now(UTC) - timedelta(days=sample.days)
    populate(store, sample.days, sample.rate_s, sample.seed, start, sensor_types=types)
    return "sqlite", store


def build(source: Path, *, entry: str = "main") -> tuple[Artifact, SigningKey]:
    """Check and sign ``source`` like ``fades fn build`` does, with a throw-away key."""
    key = SigningKey.generate("fn-test-throwaway")
    return build_function(source, key=key, entry=entry), key


def run_local(
    source: str | Path,
    *,
    sample: Sample | None = None,
    params: dict[str, Any] | None = None,
    entry: str = "main",
    memory_mib: int = DEFAULT_MEMORY_MIB,
    time_budget_ms: int = DEFAULT_TIME_BUDGET_MS,
) -> Outcome:
    """Run the function in ``source`` once on sample data; its :class:`Outcome`.

    The outcome is ``done`` with the result, or ``failed`` with the error, the function's
    traceback (its own frames, with line numbers in ``source``) and its logs.

    Raises:
        FunctionSourceError, BuildError: the source cannot be built (as ``fades fn build``).
        TaskValidationError: a parameter or limit is out of range.
        ConnectorError: the sample data cannot be opened.
    """
    from fades.node.limits import NodeLimits
    from fades.node.orchestrator import Orchestrator
    from fades.sandbox.python import source_filename
    from fades.task import parse_task

    sample = sample or Sample()
    art, key = build(Path(source), entry=entry)
    task = parse_task(
        {
            "credentials": {"tenant": "local", "task_id": "fn-test"},
            "data": [
                {
                    "name": sample.name,
                    "connector": "csv" if sample.source == "csv" else "sqlite",
                    "select": sample.select(),
                    "allow_empty": sample.allow_empty,
                }
            ],
            "function": {
                "artifact": art.digest,
                "params": params or {},
                "memory_mib": memory_mib,
                "time_budget_ms": time_budget_ms,
            },
        }
    )
    limits = NodeLimits.load(sample.path if sample.source == "home" else None)
    with tempfile.TemporaryDirectory(prefix="fades-fn-test-") as tmp_s:
        tmp = Path(tmp_s)
        trust = TrustStore([key.public])
        functions = FunctionStore(tmp / "artifacts", trust)
        if art.kind == "python":
            rkey = _runtime_key()
            trust.add(rkey.public)
            functions.add(build_runtime(key=rkey))
        functions.add(art)
        name, conn = _connector(sample, tmp)
        broker = DataBroker({name: conn}, limits=limits.fetch_limits())
        try:
            orch = Orchestrator(
                broker=broker, functions=functions, db=tmp / "tasks.db", capacity=1, limits=limits
            )
            try:
                rec = orch.run(task, timeout=time_budget_ms / 1000 + _GRACE_S, one_shot=True)
            finally:
                orch.close()
        finally:
            broker.close()
            close = getattr(conn, "close", None)
            if callable(close):
                close()
        outcome = rec.outcome(LOCAL_NODE)
    if outcome.traceback and art.kind == "python":
        text = art.payload.decode("utf-8", "replace")
        outcome = outcome.model_copy(
            update={
                "traceback": own_frames(
                    outcome.traceback, source, text, sandbox_name=source_filename(art.name)
                )
            }
        )
    return outcome


_RUNTIME_FILES = ("/app.py", "/fades_sdk.py")  # the runtime's own guest code
_FRAME = re.compile(r'^  File "(?P<file>[^"]*)", line (?P<line>\d+)(?P<rest>.*)$')


def own_frames(
    traceback: str, path: str | Path, source: str, *, sandbox_name: str = "<function>"
) -> str:
    """The sandbox's traceback with the function's frames (named ``sandbox_name`` inside the
    sandbox) named by ``path`` and shown with their source line (as Python prints a script's),
    and the runtime's own frames left out."""
    lines = source.splitlines()
    out: list[str] = []
    for line in traceback.splitlines():
        m = _FRAME.match(line)
        if m is None:
            out.append(line)
        elif m["file"] in (sandbox_name, "<function>"):
            out.append(f'  File "{path}", line {m["line"]}{m["rest"]}')
            n = int(m["line"])
            if 1 <= n <= len(lines) and lines[n - 1].strip():
                out.append("    " + lines[n - 1].strip())
        elif not m["file"].endswith(_RUNTIME_FILES):
            out.append(line)
    return "\n".join(out)
