"""A full disk still gives cards: the audit gap is counted, readiness drops, feedback is a 503.

The full disk is SQLite's own SQLITE_FULL ("database or disk is full"), produced for real, not
mocked: every connection of the store's engine gets `PRAGMA max_page_count` at the database's
current page count, so any write that needs one more page fails inside SQLite exactly as it does
when the filesystem is full (a write that fits in a page already allocated still succeeds, as it
would on a full disk). The store, the app and SQLite are the real ones; lifting the limit is the
disk getting space again.
"""

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from cds_service.app import create_app
from cds_service.settings import Settings
from tests.conftest import app_settings, load_example

EXAMPLE = "neurology-radiculopathy--seven-weeks"

pytestmark = pytest.mark.slow  # builds its own app per test (~1 s)


class FullDisk:
    """Holds a SQLite engine's database at its size when `fill` is called, until `lift`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.max_pages: int | None = None
        sa.event.listen(engine, "connect", self._cap)

    def _cap(self, dbapi_connection: Any, _: Any) -> None:
        if self.max_pages is not None:
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA max_page_count = {self.max_pages}")
            cursor.close()

    def fill(self) -> None:
        with self.engine.connect() as connection:
            self.max_pages = connection.exec_driver_sql("PRAGMA page_count").scalar_one()
            free = connection.exec_driver_sql("PRAGMA freelist_count").scalar_one()
        assert free == 0  # no free page to reuse: a write needing a page needs a new one
        self.engine.dispose()  # the pooled connections go; new ones are capped

    def lift(self) -> None:
        self.max_pages = None
        self.engine.dispose()


@pytest.fixture
def settings() -> Settings:
    return app_settings()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def disk(client: TestClient) -> FullDisk:
    return FullDisk(client.app.state.wiring.store.engine)  # type: ignore[attr-defined]


def _count(settings: Settings, table: str) -> int:
    engine = sa.create_engine(settings.database_url)  # its own engine: never capped
    with engine.connect() as connection:
        count: int = connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
    engine.dispose()
    return count


def _evaluate(client: TestClient) -> list[dict[str, Any]]:
    response = client.post("/cds-services/patient-view", json=load_example(EXAMPLE)[0])
    assert response.status_code == 200, response.text
    cards: list[dict[str, Any]] = response.json()["cards"]
    return cards


def _audit_failures(client: TestClient) -> float:
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    (line,) = [x for x in metrics.text.splitlines() if x.startswith("cds_audit_failures_total ")]
    return float(line.split()[1])


def _overridden(card: dict[str, Any], comment: str) -> dict[str, Any]:
    return {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "overrideReason": {"reason": card["overrideReasons"][0], "userComment": comment},
                "outcomeTimestamp": "2026-11-01T10:20:00Z",
            }
        ]
    }


def test_a_full_disk_still_gives_cards_and_counts_the_audit_gap(
    client: TestClient, settings: Settings, disk: FullDisk
) -> None:
    before = _evaluate(client)
    assert _count(settings, "evaluations") == 1
    assert _audit_failures(client) == 0

    disk.fill()
    cards = _evaluate(client)
    assert [c["summary"] for c in cards] == [c["summary"] for c in before]  # the same advice
    assert _audit_failures(client) == 1
    assert _count(settings, "evaluations") == 1  # the audit record could not be written

    disk.lift()
    again = _evaluate(client)
    assert [c["summary"] for c in again] == [c["summary"] for c in before]
    assert _count(settings, "evaluations") == 2  # audited again
    assert _count(settings, "cards") == 2
    assert _audit_failures(client) == 1


def test_feedback_on_a_full_disk_is_a_503_to_retry_not_a_200(
    client: TestClient, settings: Settings, disk: FullDisk
) -> None:
    """Acknowledged feedback is durable before its 200: when it cannot be written, 503."""
    (card,) = _evaluate(client)
    # A comment longer than a page: its row needs new pages, which the full disk refuses.
    body = _overridden(card, "seen by neurology last month; " * 400)

    disk.fill()
    response = client.post("/cds-services/patient-view/feedback", json=body)
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "transient"
    assert _count(settings, "feedback") == 0

    disk.lift()
    retried = client.post("/cds-services/patient-view/feedback", json=copy.deepcopy(body))
    assert retried.status_code == 200, retried.text
    assert _count(settings, "feedback") == 1


def test_ready_is_503_while_the_disk_is_full_and_200_once_it_has_room(
    client: TestClient, disk: FullDisk
) -> None:
    _evaluate(client)
    assert client.get("/ready").status_code == 200

    disk.fill()
    _evaluate(client)  # its audit write fails: the store knows it cannot write
    statuses = [client.get("/ready").status_code for _ in range(3)]
    assert statuses == [503, 503, 503]  # not ready while the disk is full, on every probe
    assert client.get("/ready").json()["resourceType"] == "OperationOutcome"

    disk.lift()
    assert client.get("/ready").status_code == 200
