"""Where an evaluation runs: a small record on the event loop (a hop to a worker thread costs
more than its evaluation), a large one in a worker thread, so the loop keeps answering."""

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bench.scaling import with_observations
from cds_service.app import create_app
from cds_service.service import INLINE_MAX_ENTRIES
from cds_service.storage import Store
from cds_service.triage import Triage
from tests.conftest import app_settings, load_example


def _on_the_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.fixture
def where() -> Iterator[tuple[TestClient, list[bool]]]:
    """A test client, and for each evaluation whether it ran on the event loop's thread."""
    app = create_app(app_settings())
    triage: Triage = app.state.wiring.service.triage
    seen: list[bool] = []
    run = triage.run

    def watched(*args: Any, **kwargs: Any) -> Any:
        seen.append(_on_the_loop())
        return run(*args, **kwargs)

    triage.run = watched  # type: ignore[method-assign]
    with TestClient(app) as client:
        yield client, seen


def test_a_small_record_is_evaluated_on_the_event_loop(
    where: tuple[TestClient, list[bool]],
) -> None:
    client, seen = where
    request, _ = load_example("red-flag-spinal-infection--fever-ivdu-markers")
    answer = client.post("/cds-services/patient-view", json=request)
    assert answer.status_code == 200, answer.text
    assert answer.json()["cards"]
    assert seen == [True]


def test_a_large_record_is_evaluated_in_a_worker_thread(
    where: tuple[TestClient, list[bool]],
) -> None:
    client, seen = where
    request = with_observations(INLINE_MAX_ENTRIES + 1, relevant=False)
    answer = client.post("/cds-services/patient-view", json=request)
    assert answer.status_code == 200, answer.text
    assert seen == [False]


def test_only_a_file_database_is_written_from_the_loop(tmp_path: Any) -> None:
    assert Store(f"sqlite:///{tmp_path}/audit.db").local
    assert not Store("postgresql+psycopg://cds@db.example/cds", migrate=False).local
