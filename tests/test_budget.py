"""The evaluation-size budget: a record over CDS_MAX_RECORD_ENTRIES gets 413, never a long hold."""

import copy
from typing import Any

from fastapi.testclient import TestClient

from cds_service.app import create_app
from tests.conftest import app_settings, load_example

EXAMPLE = "red-flag-cauda-equina--diagnosis-icd10"


def _entries(request: dict[str, Any]) -> int:
    bundles = [*request["prefetch"].values(), request["context"].get("draftOrders")]
    return sum(len(b.get("entry", [])) for b in bundles if isinstance(b, dict))


def _with_observations(count: int) -> dict[str, Any]:
    request, _ = load_example(EXAMPLE)
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{request['context']['patientId']}"},
    }
    entries = [{"resource": {**copy.deepcopy(observation), "id": f"o{i}"}} for i in range(count)]
    request["prefetch"]["observations"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": entries,
    }
    return request


def test_a_record_over_the_budget_is_413_and_at_the_budget_is_evaluated() -> None:
    at_budget = _with_observations(40)
    limit = _entries(at_budget)
    with TestClient(create_app(app_settings(max_record_entries=limit))) as client:
        answer = client.post("/cds-services/patient-view", json=at_budget)
        assert answer.status_code == 200, answer.text
        assert answer.json()["cards"]

        over = client.post("/cds-services/patient-view", json=_with_observations(41))
        assert over.status_code == 413
        (issue,) = over.json()["issue"]
        assert issue["code"] == "too-costly"
        assert f"holds {limit + 1} entries, over the {limit}" in issue["diagnostics"]
