"""Group commit: concurrent writes share a transaction, each caller wakes once its write is on
disk, a bad write fails only its own call, and audit writes leave the event loop free."""

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cds_service.errors import Unavailable
from cds_service.group_commit import GroupCommit, Work
from cds_service.storage import IssuedCard, Store, evaluations


class _Table:
    """A real SQLite table written through a GroupCommit; `gate` holds the first group open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE t (n INTEGER NOT NULL UNIQUE)")
        self.gate = threading.Event()
        self.gate.set()
        self.sizes: list[int] = []
        self.writes = GroupCommit(self.commit, idle_seconds=0.2)

    def commit(self, works: Sequence[Work[sqlite3.Connection]]) -> list[Any]:
        self.gate.wait(5)
        self.sizes.append(len(works))
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute("BEGIN")
            results = [work(db) for work in works]
            db.execute("COMMIT")
            return results
        except Exception:
            db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def insert(self, n: int) -> Any:
        def work(db: sqlite3.Connection) -> int:
            db.execute("INSERT INTO t (n) VALUES (?)", (n,))
            return n

        return self.writes.write(work)

    def rows(self) -> list[int]:
        with sqlite3.connect(self.path) as db:
            return sorted(n for (n,) in db.execute("SELECT n FROM t"))


async def _while_held(table: _Table, calls: list[Any]) -> list[Any]:
    """Run `calls` while the writer is held inside a first write, so the rest queue up."""
    table.gate.clear()
    first = asyncio.ensure_future(table.insert(-1))
    while not table.sizes and not table.writes.groups:
        await asyncio.sleep(0.01)
    rest = [asyncio.ensure_future(call) for call in calls]
    await asyncio.sleep(0.05)
    table.gate.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def test_concurrent_writes_are_committed_together_and_each_caller_gets_its_result(
    tmp_path: Path,
) -> None:
    table = _Table(tmp_path / "t.db")

    async def run() -> list[Any]:
        return await _while_held(table, [table.insert(n) for n in range(20)])

    assert asyncio.run(run()) == [-1, *range(20)]
    assert table.rows() == [-1, *range(20)]
    assert table.sizes == [1, 20]  # the first alone, the 20 that waited in one transaction


def test_a_failing_write_fails_only_its_own_call(tmp_path: Path) -> None:
    table = _Table(tmp_path / "t.db")

    async def run() -> list[Any]:
        return await _while_held(table, [table.insert(1), table.insert(-1), table.insert(2)])

    first, one, duplicate, two = asyncio.run(run())
    assert (first, one, two) == (-1, 1, 2)
    assert isinstance(duplicate, sqlite3.IntegrityError)
    assert table.rows() == [-1, 1, 2]
    assert table.sizes == [1, 3, 1, 1, 1]  # the group failed, then each write alone


def test_the_writer_thread_ends_when_idle_and_comes_back(tmp_path: Path) -> None:
    table = _Table(tmp_path / "t.db")
    writers: list[threading.Thread] = []
    commit = table.commit

    def watched(works: Sequence[Work[sqlite3.Connection]]) -> list[Any]:
        writers.append(threading.current_thread())
        return commit(works)

    table.writes = GroupCommit(watched, idle_seconds=0.2)

    async def run() -> None:
        await table.insert(1)
        await asyncio.sleep(0.6)
        assert not writers[0].is_alive()
        await table.insert(2)

    asyncio.run(run())
    assert writers[0] is not writers[1]
    assert table.rows() == [1, 2]


def _record(store: Store, n: int) -> Any:
    card = {"uuid": f"card-{n}", "indicator": "info", "summary": "s", "source": {"label": "x"}}
    return store.record_evaluation(
        f"hook-{n}", "patient-view", "0.4.0", ["r"], [IssuedCard("r", card)], 1.0
    )


def test_audit_writes_are_durable_when_awaited_and_leave_the_loop(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/audit.db")
    threads: list[str] = []
    together = store._together

    def watched(writes: Any) -> list[Any]:
        threads.append(threading.current_thread().name)
        return together(writes)

    store._writes = GroupCommit(watched)

    async def run() -> list[Any]:
        return await asyncio.gather(*[_record(store, n) for n in range(10)])

    audited = asyncio.run(run())
    assert len({a.id for a in audited}) == 10
    assert set(threads) == {"group-commit"}
    with sqlite3.connect(tmp_path / "audit.db") as db:  # another connection: on disk
        assert db.execute("SELECT count(*) FROM evaluations").fetchone() == (10,)
        assert db.execute("SELECT count(*) FROM cards").fetchone() == (10,)


def test_an_unreachable_database_is_unavailable_to_the_caller(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/audit.db")
    with store.engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE cards"))
        connection.execute(evaluations.delete())

    with pytest.raises(Unavailable):
        asyncio.run(_record(store, 1))
    assert store.failing
