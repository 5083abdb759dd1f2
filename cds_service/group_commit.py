"""Writes from concurrent calls committed together by one writer thread (group commit).

A call's audit must be durable before its answer goes out. Committed one by one, each write
costs a transaction and a flush to disk, and on SQLite it held the event loop while it did.
Here a call hands its write to the process's writer thread and awaits it: the writer takes
every write waiting, runs them in one transaction, commits once and then wakes each caller, so
what a caller is told is written is on disk, and the loop answers other calls meanwhile. A
group that fails is retried write by write, so a bad write fails only its own call. The thread
ends after `idle_seconds` without work and starts again with the next write.
"""

import asyncio
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

C = TypeVar("C")
T = TypeVar("T")

Work = Callable[[C], Any]
"""One write: given the group's connection, it runs its statements (no commit)."""


@dataclass(frozen=True, slots=True)
class _Job(Generic[C]):
    work: Work[C]
    done: "Future[Any]"


class GroupCommit(Generic[C]):
    """`write` runs a write in the next group; `commit(works)` runs a group in one transaction
    and returns each write's result (it raises when the transaction fails)."""

    def __init__(
        self,
        commit: Callable[[Sequence[Work[C]]], list[Any]],
        max_group: int = 64,
        idle_seconds: float = 5.0,
    ) -> None:
        self._commit = commit
        self._max_group = max_group
        self._idle_seconds = idle_seconds
        self._jobs: queue.SimpleQueue[_Job[C]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._writer: threading.Thread | None = None
        self.groups = 0
        """Transactions committed or tried (a retried write counts once more)."""

    async def write(self, work: Callable[[C], T]) -> T:
        """`work`'s result once the transaction holding it is committed; its error otherwise."""
        done: Future[T] = Future()
        with self._lock:
            self._jobs.put(_Job(work, done))
            if self._writer is None:
                self._writer = threading.Thread(target=self._run, name="group-commit", daemon=True)
                self._writer.start()
        return await asyncio.wrap_future(done)

    def _run(self) -> None:
        while True:
            try:
                first = self._jobs.get(timeout=self._idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self._jobs.empty():
                        self._writer = None
                        return
                continue
            group = [first]
            while len(group) < self._max_group:
                try:
                    group.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            self._run_group([job for job in group if job.done.set_running_or_notify_cancel()])

    def _run_group(self, group: list[_Job[C]]) -> None:
        if not group:
            return
        self.groups += 1
        try:
            results = self._commit([job.work for job in group])
        except Exception as exc:
            if len(group) == 1:
                group[0].done.set_exception(exc)
                return
            for job in group:  # which write failed is not known: each alone
                self._run_group([job])
            return
        for job, result in zip(group, results, strict=True):
            job.done.set_result(result)
