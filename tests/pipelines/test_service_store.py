"""The controller's pipeline records (real SQLite): runs end by the rules, each event and
each finale result once, run numbers never reused."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fades.controller.pipestore import PipelineStore
from fades.pipelines.protocol import StageEvent

FINALES = {"report": {"lamp1", "lamp2"}}  # a scattered finale on two nodes


def ev(run: str, stage: str, status: str, instance: str = "_", **kw: Any) -> StageEvent:
    return StageEvent(
        pipeline="p",
        run=run,
        stage=stage,
        instance=instance,
        node=instance if instance != "_" else "n1",
        status=status,  # type: ignore[arg-type]
        at=time.time(),
        run_started_at=time.time() - 1,
        **kw,
    )


def store(tmp_path: Path) -> PipelineStore:
    s = PipelineStore(tmp_path / "controller.db")
    s.put("p", "t", {"stages": []}, time.time(), None)
    return s


def test_a_run_is_done_only_when_every_finale_instance_is_done_or_skipped(
    tmp_path: Path,
) -> None:
    s = store(tmp_path)
    [run] = s.new_runs("p", 1, time.time())
    assert s.record(ev(run, "detect", "done"), FINALES).run_status == "running"
    first = s.record(ev(run, "report", "done", "lamp1", result={"ice": True}), FINALES)
    assert first.finale_recorded and first.run_status == "running"
    again = s.record(ev(run, "report", "done", "lamp1", result={"ice": False}), FINALES)
    assert not again.new  # delivered twice: recorded once, the first result kept
    last = s.record(ev(run, "report", "skipped", "lamp2"), FINALES)
    assert last.ended and last.run_status == "done"
    row = s.run("p", run)
    assert row is not None and row.results == {"report/lamp1": {"ice": True}}
    assert s.finale_count("p", run) == 1


def test_the_first_end_wins_and_failures_and_drops_say_why(tmp_path: Path) -> None:
    s = store(tmp_path)
    r1, r2 = s.new_runs("p", 2, time.time())
    failed = s.record(ev(r1, "fuse", "failed", error_kind="TimeLimitExceeded", error="500 ms"), {})
    assert failed.ended and failed.run_status == "failed"
    row = s.run("p", r1)
    assert row is not None and row.reason == "stage fuse failed on n1: TimeLimitExceeded: 500 ms"
    late = s.record(ev(r1, "report", "done", "lamp1"), FINALES)
    assert late.new and not late.ended and late.run_status == "failed"
    dropped = s.record(ev(r2, "detect", "dropped", error="queue full (refuse)"), {})
    assert dropped.run_status == "dropped"
    assert s.counts("p") == {"failed": 1, "dropped": 1}
    assert not s.end_run("p", r2, "cancelled")  # already ended


def test_runs_of_automatic_pipelines_come_from_events_and_numbers_are_never_reused(
    tmp_path: Path,
) -> None:
    s = store(tmp_path)
    s.record(ev("t1795000000", "detect", "done"), FINALES)
    assert [r.run for r in s.running("p")] == ["t1795000000"]
    assert s.new_runs("p", 2, time.time()) == ["r000001", "r000002"]
    s.put("p", "t", {"stages": []}, time.time(), None)  # resubmitted
    assert s.new_runs("p", 1, time.time()) == ["r000003"]
    assert [r.run for r in s.silent_runs("p", 0)] == ["r000001", "r000002", "r000003"]
    s.close()
    reopened = PipelineStore(tmp_path / "controller.db")  # and after a restart
    assert reopened.new_runs("p", 1, time.time()) == ["r000004"]
