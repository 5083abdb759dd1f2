"""Operations: Prometheus metrics, health and readiness probes."""

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from cds_service.app import create_app
from tests.conftest import app_settings, load_example


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_calls_cards_rules_and_errors() -> None:
    with TestClient(create_app(app_settings())) as client:
        request = load_example("neurology-radiculopathy--seven-weeks")[0]
        for _ in range(2):
            assert client.post("/cds-services/patient-view", json=request).status_code == 200
        assert client.post("/cds-services/nope", json=request).status_code == 404
        response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    assert samples[("cds_request_seconds_count", (("service", "patient-view"),))] == 2
    assert (
        samples[("cds_cards_total", (("indicator", "warning"), ("service", "patient-view")))] == 2
    )
    assert samples[("cds_rules_fired_total", (("rule", "neurology-radiculopathy"),))] == 2
    assert samples[("cds_errors_total", (("status", "404"),))] == 1


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 200
