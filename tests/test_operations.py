"""Operations: Prometheus metrics, probes, structured logs."""

import io
import json
import logging

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from cds_service.app import create_app
from cds_service.logs import JsonFormatter, configure_logging
from tests.conftest import app_settings, load_example


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.slow  # builds apps of its own (~1 s each)
def test_metrics_count_calls_cards_rules_and_errors() -> None:
    with TestClient(create_app(app_settings())) as client:
        request = load_example("neurology-radiculopathy--seven-weeks")[0]
        for _ in range(2):
            assert client.post("/cds-services/patient-view", json=request).status_code == 200
        assert client.post("/cds-services/nope", json=request).status_code == 404
        plain = {"Content-Type": "text/plain"}
        assert (
            client.post("/cds-services/patient-view", content=b"x", headers=plain).status_code
            == 415
        )
        response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    assert samples[("cds_request_seconds_count", (("service", "patient-view"),))] == 2
    assert (
        samples[("cds_cards_total", (("indicator", "warning"), ("service", "patient-view")))] == 2
    )
    assert samples[("cds_rules_fired_total", (("rule", "neurology-radiculopathy"),))] == 2
    assert samples[("cds_errors_total", (("status", "404"),))] == 1
    assert samples[("cds_errors_total", (("status", "415"),))] == 1


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 200


def test_access_log_lines_carry_the_request_id_and_no_token(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cds_service.access")
    request = load_example("neurology-radiculopathy--seven-weeks")[0]
    response = client.post(
        "/cds-services/patient-view",
        json=request,
        headers={"X-Request-ID": "req-42", "Authorization": "Bearer secret-token"},
    )
    assert response.headers["X-Request-ID"] == "req-42"
    (record,) = [r for r in caplog.records if r.name == "cds_service.access"]
    line = json.loads(JsonFormatter().format(record))
    assert line["path"] == "/cds-services/patient-view"
    assert line["status"] == 200
    assert line["duration_ms"] > 0
    assert "secret-token" not in json.dumps(line)
    assert request["context"]["patientId"] not in json.dumps(line)


def test_a_request_id_is_made_up_when_missing_or_unsafe(client: TestClient) -> None:
    made_up = client.get("/health").headers["X-Request-ID"]
    assert len(made_up) == 32
    unsafe = client.get("/health", headers={"X-Request-ID": "bad id\nwith newline"})
    assert unsafe.headers["X-Request-ID"] != "bad id\nwith newline"


def test_responses_carry_security_headers(client: TestClient) -> None:
    health = client.get("/health")
    assert health.headers["X-Content-Type-Options"] == "nosniff"
    assert health.headers["Cache-Control"] == "no-store"  # JSON may hold patient data
    page = client.get("/review")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


@pytest.mark.slow  # builds an app of its own (~1 s)
def test_the_review_page_connects_to_its_smart_issuers_and_authorization_servers() -> None:
    settings = app_settings(
        smart_client_id="review",
        smart_issuers=["https://ehr.example/fhir/r4"],
        smart_origins=["https://login.ehr.example"],
        trust_sandbox=True,
    )
    with TestClient(create_app(settings)) as client:
        policy = client.get("/review").headers["Content-Security-Policy"]
        config = client.get("/review/config").json()
        playground = client.get("/playground").headers["Content-Security-Policy"]
    origins = "https://ehr.example https://launch.smarthealthit.org https://login.ehr.example"
    assert policy.endswith(f"; connect-src 'self' {origins}")
    assert config == {
        "clientId": "review",
        "issuers": ["https://ehr.example/fhir/r4", "https://launch.smarthealthit.org/v/r4/fhir"],
    }
    assert "connect-src" not in playground


@pytest.mark.slow  # builds apps of its own (~1 s each)
def test_a_production_deployment_serves_no_playground_docs_or_open_metrics() -> None:
    production = app_settings(auth_disabled=False)
    with TestClient(create_app(production)) as client:
        for path in ("/playground", "/docs", "/redoc", "/metrics"):  # /redoc: never (a CDN)
            assert client.get(path).status_code == 404, path
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/review").status_code == 200
    with TestClient(create_app(app_settings(auth_disabled=False, metrics_token="s3"))) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer s3"}).status_code == 200
    with TestClient(create_app(app_settings(auth_disabled=False, demo_pages=True))) as client:
        assert client.get("/playground").status_code == 200


@pytest.mark.slow  # builds apps of its own (~1 s each)
def test_start_up_logs_no_migration_narrative() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("alembic").level
    stream = io.StringIO()
    try:
        configure_logging("info", stream)
        create_app(app_settings())
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        logging.getLogger("alembic").setLevel(saved[2])
    assert "rule set" in stream.getvalue()
    assert "alembic" not in stream.getvalue()
