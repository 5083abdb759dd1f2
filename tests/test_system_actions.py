"""systemActions: the rating of each judged draft order a card rates, beside the cards."""

import copy
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_service.ratings import PAMA_RATING, PAMA_RATING_SYSTEM
from tests.conftest import load_example

RATED: dict[str, dict[str, str]] = {
    # example: {draft order rated: rating}
    "imaging-acute-without-red-flag--order-select-mri": {"ServiceRequest/mri-1": "not-appropriate"},
    "imaging-acute-without-red-flag--ct-cpt-72131-order-sign": {
        "ServiceRequest/ct-1": "not-appropriate"
    },
    "imaging-acute-without-red-flag--sandbox-pama-reason-low-back-pain": {
        "ServiceRequest/example-request-id": "not-appropriate"
    },
    # the surgeon referral beside it gets a card but no rating: its rule rates nothing
    "imaging-acute-without-red-flag--selected-mri-beside-surgeon-referral": {
        "ServiceRequest/mri-14": "not-appropriate"
    },
    "imaging-supported-by-red-flag--order-select-mri-infection": {
        "ServiceRequest/mri-3": "appropriate"
    },
    "imaging-supported-by-red-flag--reason-cauda-equina": {"ServiceRequest/mri-9": "appropriate"},
    # no rule judges these orders, or none is judged: no systemActions at all
    "imaging-acute-without-red-flag--age-over-seventy-not-deleted": {},
    "imaging-acute-without-red-flag--mri-not-selected": {},
    "imaging-supported-by-red-flag--patient-view-has-no-order-cards": {},
}


def _sent_orders(request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    entries = request["context"].get("draftOrders", {}).get("entry", [])
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"] for e in entries
    }


def _rating(resource: dict[str, Any]) -> str:
    (extension,) = [e for e in resource["extension"] if e["url"] == PAMA_RATING]
    (coding,) = extension["valueCodeableConcept"]["coding"]
    assert coding["system"] == PAMA_RATING_SYSTEM
    code: str = coding["code"]
    return code


@pytest.mark.parametrize("name", RATED)
def test_rated_orders_are_updated_with_their_rating(client: TestClient, name: str) -> None:
    request, expected = load_example(name)
    response = client.post(f"/cds-services/{request['hook']}", json=request)
    assert response.status_code == 200, response.text
    answer = response.json()
    # the cards stay what they were
    assert len(answer["cards"]) == len(expected["cards"])
    if not RATED[name]:
        assert "systemActions" not in answer  # no empty member
        assert "extension" not in answer
        return
    actions = answer["systemActions"]
    sent = _sent_orders(request)
    rated = {}
    for action in actions:
        assert action["type"] == "update"
        resource = action["resource"]
        reference = f"{resource['resourceType']}/{resource['id']}"
        # the whole order as sent, plus its rating
        assert {k: v for k, v in resource.items() if k != "extension"} == sent[reference]
        rated[reference] = _rating(resource)
    assert rated == RATED[name]
    # the sandbox reads them where CDS Hooks put them before 2.0
    assert answer["extension"] == {"systemActions": actions}


def test_a_rating_sent_before_is_replaced_and_other_extensions_kept(client: TestClient) -> None:
    request, _ = load_example("imaging-supported-by-red-flag--reason-cauda-equina")
    request = copy.deepcopy(request)
    (entry,) = request["context"]["draftOrders"]["entry"]
    other = {"url": "https://ehr.example/ordering-site", "valueString": "north"}
    stale = {
        "url": PAMA_RATING,
        "valueCodeableConcept": {
            "coding": [{"system": PAMA_RATING_SYSTEM, "code": "not-appropriate"}]
        },
    }
    entry["resource"]["extension"] = [other, stale]
    response = client.post("/cds-services/order-sign", json=request)
    assert response.status_code == 200, response.text
    (action,) = response.json()["systemActions"]
    assert action["resource"]["extension"][0] == other
    assert _rating(action["resource"]) == "appropriate"


@pytest.mark.parametrize(
    ("extension", "path"),
    [
        ("pama", "extension"),
        ([{"valueString": "no url"}], "extension[0].url"),
        ([None], "extension[0]"),
    ],
)
def test_a_malformed_extension_on_an_order_is_a_400_naming_it(
    client: TestClient, extension: Any, path: str
) -> None:
    """The extensions of a rated order are sent back: they are checked like what is read."""
    request, _ = load_example("imaging-acute-without-red-flag--order-select-mri")
    request = copy.deepcopy(request)
    request["context"]["draftOrders"]["entry"][0]["resource"]["extension"] = extension
    response = client.post("/cds-services/order-select", json=request)
    assert response.status_code == 400
    (issue,) = response.json()["issue"]
    assert issue["expression"] == [f"context.draftOrders.entry[0].resource.{path}"]
