"""Scheduling policies and the ready queue of the orchestrator.

A policy maps a task (and its arrival number) to a sort key; the queue always hands out the
smallest key. Ties fall back to arrival order, so every policy is FIFO among equals.
"""

from __future__ import annotations

import heapq
import math
import threading
from typing import Protocol

from fades.errors import OrchestratorError
from fades.task import Task


class SchedulingPolicy(Protocol):
    name: str

    def key(self, task: Task, seq: int) -> tuple[float, ...]:
        """Smaller keys run first."""
        ...


class FIFO:
    """First come, first served."""

    name = "fifo"

    def key(self, task: Task, seq: int) -> tuple[float, ...]:
        return (seq,)


class Priority:
    """Highest ``credentials.priority`` first (9 before 0)."""

    name = "priority"

    def key(self, task: Task, seq: int) -> tuple[float, ...]:
        return (-task.credentials.priority, seq)


class EarliestDeadlineFirst:
    """Earliest ``credentials.deadline`` first; tasks without a deadline go last."""

    name = "edf"

    def key(self, task: Task, seq: int) -> tuple[float, ...]:
        dl = task.credentials.deadline
        return (dl.timestamp() if dl else math.inf, seq)


POLICIES: dict[str, type[FIFO] | type[Priority] | type[EarliestDeadlineFirst]] = {
    "fifo": FIFO,
    "priority": Priority,
    "edf": EarliestDeadlineFirst,
}


def get_policy(name: str | SchedulingPolicy) -> SchedulingPolicy:
    if not isinstance(name, str):
        return name
    try:
        return POLICIES[name.lower()]()
    except KeyError:
        raise OrchestratorError(
            f"unknown scheduling policy {name!r}; choose one of {', '.join(POLICIES)}"
        ) from None


class ReadyQueue:
    """A thread-safe priority queue of accepted tasks, ordered by a policy."""

    def __init__(self, policy: SchedulingPolicy) -> None:
        self.policy = policy
        self._heap: list[tuple[tuple[float, ...], int, Task]] = []
        self._seq = 0
        self._cond = threading.Condition()
        self._closed = False

    def put(self, task: Task) -> None:
        with self._cond:
            self._seq += 1
            heapq.heappush(self._heap, (self.policy.key(task, self._seq), self._seq, task))
            self._cond.notify()

    def get(self, timeout: float | None = None) -> Task | None:
        """The next task, or None once closed (or on timeout)."""
        with self._cond:
            while not self._heap and not self._closed:
                if not self._cond.wait(timeout):
                    return None
            if self._closed:
                return None
            return heapq.heappop(self._heap)[2]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._heap)
