"""Values at the edge of what can be represented are a 400 naming them, never a 500."""

import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from tests.conftest import app_settings, load_example


@pytest.mark.parametrize("timestamp", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_a_feedback_timestamp_whose_utc_instant_overflows_is_400(
    client: TestClient, timestamp: str
) -> None:
    request, _ = load_example("red-flag-cauda-equina--diagnosis-icd10")
    card = client.post("/cds-services/patient-view", json=request).json()["cards"][0]
    item = {
        "card": card["uuid"],
        "outcome": "overridden",
        "overrideReason": {"userComment": "x"},
        "outcomeTimestamp": timestamp,
    }
    answer = client.post("/cds-services/patient-view/feedback", json={"feedback": [item]})
    assert answer.status_code == 400
    (issue,) = answer.json()["issue"]
    assert issue["expression"] == ["feedback[0].outcomeTimestamp"]
    assert "outside years 1-9999" in issue["diagnostics"]


def test_an_admin_page_offset_past_any_table_is_400() -> None:
    with TestClient(create_app(app_settings(admin_token="t"))) as client:
        answer = client.get(
            "/admin/feedback?offset=9223372036854775808", headers={"Authorization": "Bearer t"}
        )
    assert answer.status_code == 400
    assert answer.json()["issue"][0]["expression"] == ["offset"]


@pytest.mark.parametrize("day", ["0", "2024-01-01T00:00:00", "2026-02-30", "1e9"])
def test_admin_dates_are_calendar_days_written_yyyy_mm_dd(day: str) -> None:
    with TestClient(create_app(app_settings(admin_token="t"))) as client:
        answer = client.get(f"/admin/report?until={day}", headers={"Authorization": "Bearer t"})
    assert answer.status_code == 400
    assert answer.json()["issue"][0]["expression"] == ["until"]
