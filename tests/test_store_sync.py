"""What a crash can and cannot take from the SQLite store: with CDS_STORE_SYNC_SECONDS above 0
a commit survives a killed service at once and is in the database file, synced, within the
window; what an OS crash or power loss could take is what is not there yet."""

import shutil
import signal
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from cds_service.storage import Store
from tests.loopback import running_service

EXAMPLE = (
    Path(__file__).parent.parent / "fhir_examples" / "neurology-radiculopathy--seven-weeks.json"
)


def _synchronous(store: Store) -> int:
    with store.engine.connect() as connection:
        return int(connection.exec_driver_sql("PRAGMA synchronous").scalar_one())


def test_a_sync_window_lets_sqlite_commit_without_syncing_each(tmp_path: Path) -> None:
    windowed = Store(f"sqlite:///{tmp_path}/a.db", sync_seconds=1)
    each = Store(f"sqlite:///{tmp_path}/b.db")
    assert windowed.syncs
    assert _synchronous(windowed) == 1  # NORMAL: the log is synced at checkpoints
    assert not each.syncs
    assert _synchronous(each) == 2  # FULL: every commit


def _evaluate(url: str, count: int) -> None:
    body = EXAMPLE.read_bytes()
    for _ in range(count):
        answer = httpx.post(
            f"{url}/cds-services/patient-view",
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert answer.status_code == 200
        assert answer.json()["cards"]


def _evaluations(database: Path) -> int:
    with sqlite3.connect(database) as db:
        return int(db.execute("SELECT count(*) FROM evaluations").fetchone()[0])


def _in_the_file_alone(database: Path, tmp_path: Path) -> int:
    """Evaluations in the database file without its write-ahead log: what has been
    checkpointed (SQLite syncs the log before a checkpoint and the file after it)."""
    copy = tmp_path / "copy" / database.name
    copy.parent.mkdir(exist_ok=True)
    shutil.copyfile(database, copy)
    try:
        return _evaluations(copy)
    except sqlite3.OperationalError:  # no table yet: even the schema is only in the log
        return 0


@pytest.mark.slow  # the service runs as a process, and is killed
def test_a_killed_service_loses_no_answered_evaluation(tmp_path: Path) -> None:
    database = tmp_path / "spine-cds.db"
    with running_service(tmp_path, f"sqlite:///{database}") as (url, server):
        _evaluate(url, 10)
        server.send_signal(signal.SIGKILL)  # no shutdown, no sync: only what was committed
        server.wait(timeout=10)
    assert _evaluations(database) == 10


@pytest.mark.slow
def test_commits_are_in_the_database_file_within_the_window(tmp_path: Path) -> None:
    database = tmp_path / "spine-cds.db"
    settings = {"CDS_STORE_SYNC_SECONDS": "0.5", "CDS_PURGE_INTERVAL_SECONDS": "0"}
    with running_service(tmp_path, f"sqlite:///{database}", settings) as (url, server):
        _evaluate(url, 5)
        deadline = time.monotonic() + 5
        while _in_the_file_alone(database, tmp_path) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _in_the_file_alone(database, tmp_path) == 5
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)


@pytest.mark.slow
def test_commits_not_yet_synced_are_only_in_the_log(tmp_path: Path) -> None:
    """With a window longer than the test, the commits are not in the file yet: an OS crash
    before the next sync could lose them (a killed service does not: the test above)."""
    database = tmp_path / "spine-cds.db"
    settings = {"CDS_STORE_SYNC_SECONDS": "3600", "CDS_PURGE_INTERVAL_SECONDS": "0"}
    with running_service(tmp_path, f"sqlite:///{database}", settings) as (url, server):
        _evaluate(url, 5)
        time.sleep(1)
        assert _in_the_file_alone(database, tmp_path) == 0
        assert _evaluations(database) == 5  # read with the log: committed
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
