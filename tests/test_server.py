"""The real service: `cds-service serve` on loopback, called over HTTP as an EHR would."""

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fhir.resources.R4B.servicerequest import ServiceRequest

from tests.conftest import EXAMPLES
from tests.loopback import running_service

pytestmark = pytest.mark.slow  # the service runs as a uvicorn subprocess


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("server")
    with running_service(folder, f"sqlite:///{folder / 'spine-cds.db'}") as (url, _):
        yield url


def test_example_posted_to_the_running_service_gets_a_valid_referral(base_url: str) -> None:
    body = (EXAMPLES / "red-flag-spinal-infection--fever-ivdu-markers.json").read_bytes()
    response = httpx.post(
        f"{base_url}/cds-services/patient-view",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    (card,) = response.json()["cards"]
    assert card["indicator"] == "critical"
    (action,) = card["suggestions"][0]["actions"]
    referral = action["resource"]
    ServiceRequest.model_validate(referral)  # a valid R4(B) ServiceRequest, or this raises
    assert referral["status"] == "draft"
    assert referral["priority"] == "stat"
    assert referral["subject"] == {"reference": "Patient/pt-infection-ivdu"}
    performer = referral["performerType"]["coding"][0]
    assert (performer["system"], performer["code"]) == (
        "http://nucc.org/provider-taxonomy",
        "207P00000X",
    )
    code = referral["code"]["coding"][0]
    assert (code["system"], code["code"]) == ("http://snomed.info/sct", "183866009")
    assert [r["reference"] for r in referral["reasonReference"]] == [
        "Condition/c1",
        "Condition/c2",
        "Observation/o1",
        "Observation/o2",
        "Observation/o3",
    ]


def test_discovery_over_http(base_url: str) -> None:
    services = httpx.get(f"{base_url}/cds-services", timeout=10).json()["services"]
    assert {s["id"] for s in services} == {"patient-view", "order-select", "order-sign"}


def test_acknowledged_feedback_survives_a_killed_service(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'spine-cds.db'}"
    body = (EXAMPLES / "neurology-radiculopathy--seven-weeks.json").read_bytes()
    headers = {"Content-Type": "application/json"}
    with running_service(tmp_path, database_url) as (url, server):
        card = httpx.post(f"{url}/cds-services/patient-view", content=body, headers=headers).json()[
            "cards"
        ][0]
        feedback = {
            "feedback": [
                {
                    "card": card["uuid"],
                    "outcome": "accepted",
                    "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
                    "outcomeTimestamp": "2026-11-01T10:15:00Z",
                }
            ]
        }
        response = httpx.post(f"{url}/cds-services/patient-view/feedback", json=feedback)
        assert response.status_code == 200
        server.send_signal(signal.SIGKILL)  # no shutdown, no flush: only what was committed
        server.wait(timeout=10)

    with running_service(tmp_path, database_url) as (url, _):
        again = httpx.post(f"{url}/cds-services/patient-view/feedback", json=feedback)
        assert again.status_code == 200  # the card is still known, the repeat is a no-op

    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT card_uuid, outcome FROM feedback")).all()
    engine.dispose()
    assert [tuple(row) for row in rows] == [(card["uuid"], "accepted")]


def test_serve_exposes_health_ready_and_metrics(base_url: str) -> None:
    assert httpx.get(f"{base_url}/health", timeout=10).json()["status"] == "ok"
    assert httpx.get(f"{base_url}/ready", timeout=10).json()["status"] == "ready"
    metrics = httpx.get(f"{base_url}/metrics", timeout=10)
    assert metrics.status_code == 200
    assert "cds_request_seconds" in metrics.text


def test_serve_logs_json_lines_with_request_ids(tmp_path: Path) -> None:
    with running_service(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}") as (url, _):
        httpx.get(f"{url}/health", headers={"X-Request-ID": "probe-7"}, timeout=10)
    (log,) = tmp_path.glob("server-*.log")
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("request_id") == "probe-7"]
    assert access
    assert access[0]["path"] == "/health"
    assert any("authentication is OFF" in line["message"] for line in lines)
