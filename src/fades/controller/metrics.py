"""Prometheus metrics of one controller (its own registry, so several can share a process)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    """Counters of submits and results, task latency, and nodes up/down at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.submitted = Counter(
            "fades_tasks_submitted",
            "Tasks accepted by the controller",
            ["where"],
            registry=self.registry,
        )
        self.refused = Counter(
            "fades_tasks_refused",
            "Task submissions refused, by error kind",
            ["kind"],
            registry=self.registry,
        )
        self.results = Counter(
            "fades_results",
            "Results stored, by where the task ran and its status",
            ["where", "status"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "fades_results_duplicate",
            "Results received again for a task that already had one (ignored)",
            registry=self.registry,
        )
        self.latency = Histogram(
            "fades_task_latency_seconds",
            "Submit at the controller -> result stored",
            ["where"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.nodes_up = Gauge("fades_nodes_up", "Nodes up", registry=self.registry)
        self.nodes_down = Gauge("fades_nodes_down", "Nodes down", registry=self.registry)
        # pipelines (fades.pipelines.service / tracker)
        self.pipeline_started = Counter(
            "fades_pipeline_runs_started",
            "On-demand pipeline runs started by the controller",
            registry=self.registry,
        )
        self.pipeline_runs = Counter(
            "fades_pipeline_runs",
            "Pipeline runs that ended, by status (done, failed, dropped, cancelled)",
            ["status"],
            registry=self.registry,
        )
        self.pipeline_events = Counter(
            "fades_pipeline_stage_events",
            "Stage events recorded (each once), by status",
            ["status"],
            registry=self.registry,
        )
        self.pipeline_drops = Counter(
            "fades_pipeline_drops",
            "Pipeline bundles or runs dropped or refused by a full queue",
            registry=self.registry,
        )
        self.pipeline_queue = Gauge(
            "fades_pipeline_queue_depth",
            "Bundles waiting (or in flight) for a stage instance of an active pipeline",
            ["pipeline", "stage", "instance"],
            registry=self.registry,
        )
        self.pipeline_failovers = Counter(
            "fades_pipeline_failovers",
            "Pipeline re-plans after a node went down or came back",
            registry=self.registry,
        )

    def child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, remembered (label values here come from small fixed
        sets: where a task ran, its status, an error kind)."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def track_nodes(self, up: Callable[[], int], down: Callable[[], int]) -> None:
        self.nodes_up.set_function(lambda: float(up()))
        self.nodes_down.set_function(lambda: float(down()))

    def render(self) -> bytes:
        return generate_latest(self.registry)
