"""The collector pauses for large bodies only, and pauses nest."""

import gc
from typing import Any

import orjson
from fastapi.testclient import TestClient

from bench.scaling import with_observations
from cds_service import collector


def test_a_small_body_leaves_the_collector_running() -> None:
    with collector.paused_for(collector.LARGE_BODY_BYTES):
        assert gc.isenabled()


def test_a_large_body_pauses_it_until_the_last_large_body_ends() -> None:
    large = collector.LARGE_BODY_BYTES + 1
    with collector.paused_for(large):
        assert not gc.isenabled()
        with collector.paused_for(large):
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer one is still being read
    assert gc.isenabled()


def test_a_failure_inside_still_restarts_it() -> None:
    try:
        with collector.paused_for(collector.LARGE_BODY_BYTES + 1):
            raise ValueError("the evaluation failed")
    except ValueError:
        pass
    assert gc.isenabled()


def test_the_service_reads_a_large_record_without_a_collector_pass(client: TestClient) -> None:
    """Real HTTP handling (the app in process): 12,000 temperatures the rules read, over 3 MB,
    would set off several passes at the app's threshold; the collector is paused for them."""
    body = orjson.dumps(with_observations(12_000, relevant=True))
    assert len(body) > collector.LARGE_BODY_BYTES
    passes: list[int] = []

    def count(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            passes.append(info["generation"])

    gc.callbacks.append(count)
    try:
        answer = client.post(
            "/cds-services/patient-view",
            content=body,
            headers={"Content-Type": "application/json"},
        )
    finally:
        gc.callbacks.remove(count)
    assert answer.status_code == 200, answer.text
    assert passes == []
    assert gc.isenabled()
