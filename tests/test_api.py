"""HTTP behaviour: discovery, and a clear 4xx OperationOutcome for every kind of bad input."""

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.knowledge import Knowledge
from tests.conftest import ROOT, app_settings, load_example

EXAMPLE = "neurology-radiculopathy--seven-weeks"


@pytest.fixture
def request_body() -> dict[str, Any]:
    return copy.deepcopy(load_example(EXAMPLE)[0])


def _issues(response: Any) -> list[dict[str, Any]]:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    issues: list[dict[str, Any]] = body["issue"]
    return issues


def _expressions(response: Any) -> list[str]:
    return [e for issue in _issues(response) for e in issue.get("expression", [])]


def test_discovery_lists_one_service_per_hook_with_prefetch_and_version(
    client: TestClient, knowledge: Knowledge
) -> None:
    services = client.get("/cds-services").json()["services"]
    assert sorted(s["hook"] for s in services) == ["order-select", "order-sign", "patient-view"]
    for service in services:
        assert {"id", "hook", "title", "description", "prefetch"} <= service.keys()
        assert service["prefetch"]["patient"] == "Patient/{{context.patientId}}"
        assert service["prefetch"]["conditions"] == "Condition?patient={{context.patientId}}"
        observations = "Observation?patient={{context.patientId}}&category="
        assert service["prefetch"]["observations-vital-signs"] == f"{observations}vital-signs"
        assert service["prefetch"]["observations-laboratory"] == f"{observations}laboratory"
        assert service["extension"]["org.spine-cds.ruleset"]["version"] == knowledge.version
        assert service["version"] == "2.0.1"  # the CDS Hooks specification (3.0 ballot field)


def test_cards_offer_hl7_override_reasons_beside_ours(client: TestClient) -> None:
    body, _ = load_example("neurology-radiculopathy--seven-weeks")
    (card,) = client.post("/cds-services/patient-view", json=body).json()["cards"]
    systems = {reason["system"] for reason in card["overrideReasons"]}
    assert systems == {
        "https://spine-cds.org/fhir/CodeSystem/override-reason",
        "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes",
    }
    hl7 = [r for r in card["overrideReasons"] if "terminology.hl7.org" in r["system"]]
    assert {"patient-contraindication", "service-not-available"} <= {r["code"] for r in hl7}
    assert all(reason["display"] for reason in card["overrideReasons"])


def test_health(client: TestClient, knowledge: Knowledge) -> None:
    health = {"status": "ok", "ruleset": knowledge.version, "silent_rules": []}
    assert client.get("/health").json() == health


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post(
        "/cds-services/patient-view",
        content=b'{"hook": "patient-view",',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "malformed JSON" in _issues(response)[0]["diagnostics"]


@pytest.mark.parametrize("field", ["hook", "hookInstance", "context"])
def test_missing_required_field_is_400_naming_it(
    client: TestClient, request_body: dict[str, Any], field: str
) -> None:
    del request_body[field]
    response = client.post("/cds-services/patient-view", json=request_body)
    assert response.status_code == 400
    assert field in _expressions(response)


def test_missing_patient_id_is_400(client: TestClient, request_body: dict[str, Any]) -> None:
    del request_body["context"]["patientId"]
    response = client.post("/cds-services/patient-view", json=request_body)
    assert response.status_code == 400
    assert _expressions(response) == ["context.patientId"]


def test_invalid_fhir_names_the_path(client: TestClient, request_body: dict[str, Any]) -> None:
    request_body["prefetch"]["conditions"]["entry"][0]["resource"]["clinicalStatus"] = "active"
    response = client.post("/cds-services/patient-view", json=request_body)
    assert response.status_code == 400
    assert _expressions(response) == ["prefetch.conditions.entry[0].resource.clinicalStatus"]


def test_invalid_date_names_the_path(client: TestClient, request_body: dict[str, Any]) -> None:
    request_body["prefetch"]["conditions"]["entry"][0]["resource"]["onsetDateTime"] = "last week"
    response = client.post("/cds-services/patient-view", json=request_body)
    assert response.status_code == 400
    assert _expressions(response) == ["prefetch.conditions.entry[0].resource.onsetDateTime"]


def test_unknown_status_code_is_rejected(client: TestClient, request_body: dict[str, Any]) -> None:
    observation = request_body["prefetch"]["observations"]["entry"][0]["resource"]
    observation["code"] = {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]}
    observation["status"] = "bogus"
    response = client.post("/cds-services/patient-view", json=request_body)
    assert response.status_code == 400
    assert _expressions(response) == ["prefetch.observations.entry[0].resource.status"]


def test_a_resource_no_rule_reads_is_skipped_unvalidated(
    client: TestClient, request_body: dict[str, Any]
) -> None:
    """Only what the rules can read is validated: an Observation coded outside every value set
    is passed over, whatever else it holds (the validation contract in the README)."""
    observation = request_body["prefetch"]["observations"]["entry"][0]["resource"]
    observation["code"] = {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}
    observation["status"] = "bogus"
    observation["subject"] = {"reference": "Patient/someone-else"}
    response = client.post("/cds-services/patient-view", json=request_body)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("element", "value"),
    [("status", "bogus"), ("subject", {"reference": "Patient/someone-else"})],
)
def test_an_error_after_skipped_entries_names_the_entry_where_it_was_sent(
    client: TestClient, request_body: dict[str, Any], element: str, value: Any
) -> None:
    """Entries no rule reads are left out before validation; an error in a read entry still
    names its place in the Bundle as sent (a validation error, and the other-patient check)."""
    entries = request_body["prefetch"]["observations"]["entry"]
    unread = {"system": "http://loinc.org", "code": "2345-7"}
    skipped = copy.deepcopy(entries[0])
    skipped["resource"]["code"] = {"coding": [unread]}
    read = copy.deepcopy(entries[0])
    read["resource"]["code"] = {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]}
    read["resource"][element] = value
    entries[:] = [skipped, skipped, read, skipped]
    response = client.post("/cds-services/patient-view", json=request_body)
    assert response.status_code == 400
    assert _expressions(response) == [f"prefetch.observations.entry[2].resource.{element}"]


def test_resource_of_another_patient_is_400(
    client: TestClient, request_body: dict[str, Any]
) -> None:
    request_body["prefetch"]["conditions"]["entry"][0]["resource"]["subject"] = {
        "reference": "Patient/someone-else"
    }
    response = client.post("/cds-services/patient-view", json=request_body)
    assert response.status_code == 400
    assert _expressions(response) == ["prefetch.conditions.entry[0].resource.subject"]


def test_unknown_service_is_404(client: TestClient, request_body: dict[str, Any]) -> None:
    response = client.post("/cds-services/no-such-service", json=request_body)
    assert response.status_code == 404
    assert _issues(response)[0]["code"] == "not-found"


def test_hook_not_matching_service_is_400(client: TestClient, request_body: dict[str, Any]) -> None:
    response = client.post("/cds-services/order-sign", json=request_body)
    assert response.status_code == 400
    assert _expressions(response) == ["hook"]


def test_the_sandbox_order_sign_call_labelled_order_select_is_answered_as_order_sign(
    client: TestClient,
) -> None:
    """The sandbox's PAMA tab posts its order-sign call with `hook: order-select` (and its
    `selections`): order-sign answers it, judging every draft order."""
    body, _ = load_example("imaging-acute-without-red-flag--selected-mri-beside-surgeon-referral")
    assert body["hook"] == "order-select"
    selected = client.post("/cds-services/order-select", json=body).json()["cards"]
    signed = client.post("/cds-services/order-sign", json=body)
    assert signed.status_code == 200, signed.text
    rules = [card["extension"]["org.spine-cds.rule"]["id"] for card in signed.json()["cards"]]
    assert "surgeon-referral-without-indication" in rules  # the unselected referral is judged
    assert len(signed.json()["cards"]) == len(selected) + 1


def test_an_order_sign_call_is_not_answered_by_order_select(client: TestClient) -> None:
    body, _ = load_example("imaging-supported-by-red-flag--order-sign-mri-cauda-equina")
    response = client.post("/cds-services/order-select", json=body)
    assert response.status_code == 400
    assert _expressions(response) == ["hook"]


def test_a_selection_not_in_draft_orders_is_400_naming_it(client: TestClient) -> None:
    body, _ = load_example("imaging-acute-without-red-flag--order-select-mri")
    body["context"]["selections"] = ["ServiceRequest/mri-1", "ServiceRequest/elsewhere"]
    response = client.post("/cds-services/order-select", json=body)
    assert response.status_code == 400
    assert _expressions(response) == ["context.selections[1]"]
    assert "ServiceRequest/elsewhere" in _issues(response)[0]["diagnostics"]


def test_a_selection_may_name_an_order_by_its_full_url(client: TestClient) -> None:
    body, _ = load_example("imaging-acute-without-red-flag--order-select-mri")
    (entry,) = body["context"]["draftOrders"]["entry"]
    entry["fullUrl"] = "urn:uuid:6f1c2a8e-2a55-4c1e-9d1e-0b7c1f1d2e3a"
    body["context"]["selections"] = [entry["fullUrl"]]
    response = client.post("/cds-services/order-select", json=body)
    assert response.status_code == 200, response.text
    rules = [card["extension"]["org.spine-cds.rule"]["id"] for card in response.json()["cards"]]
    assert "imaging-acute-without-red-flag" in rules


def test_order_hook_without_draft_orders_is_400(
    client: TestClient, request_body: dict[str, Any]
) -> None:
    request_body["hook"] = "order-sign"
    response = client.post("/cds-services/order-sign", json=request_body)
    assert response.status_code == 400
    assert _expressions(response) == ["context.draftOrders"]


@pytest.mark.parametrize(
    "value",
    [{"resourceType": "OperationOutcome", "issue": []}, "absent"],
    ids=["operation-outcome", "absent"],
)
def test_required_prefetch_that_cannot_be_had_is_412(
    client: TestClient, request_body: dict[str, Any], value: Any
) -> None:
    if value == "absent":
        del request_body["prefetch"]["conditions"]
    else:
        request_body["prefetch"]["conditions"] = value
    response = client.post("/cds-services/patient-view", json=request_body)
    assert response.status_code == 412
    assert _expressions(response) == ["prefetch.conditions"]


@pytest.mark.parametrize("key", ["patient", "conditions", "observations"])
def test_a_null_prefetch_key_means_no_data(
    client: TestClient, request_body: dict[str, Any], key: str
) -> None:
    """CDS Hooks 2.0.1: the client sends null when it has no data for a key; not a 412."""
    request_body["prefetch"][key] = None
    response = client.post("/cds-services/patient-view", json=request_body)
    assert response.status_code == 200, response.text


def test_empty_searchsets_give_no_cards(client: TestClient, request_body: dict[str, Any]) -> None:
    for key in ("conditions", "observations"):
        request_body["prefetch"][key] = {"resourceType": "Bundle", "type": "searchset", "total": 0}
    response = client.post("/cds-services/patient-view", json=request_body)
    assert response.status_code == 200
    assert response.json() == {"cards": []}


def test_prefetch_of_wrong_shape_is_400(client: TestClient, request_body: dict[str, Any]) -> None:
    request_body["prefetch"]["conditions"] = ["not", "a", "bundle"]
    response = client.post("/cds-services/patient-view", json=request_body)
    assert response.status_code == 400
    assert _expressions(response) == ["prefetch.conditions"]


def test_unknown_route_is_404_operation_outcome(client: TestClient) -> None:
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert _issues(response)[0]["code"] == "not-found"


def test_body_that_is_not_json_is_415(client: TestClient) -> None:
    response = client.post(
        "/cds-services/patient-view",
        content=b"hook=patient-view",
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 415
    assert "application/json" in _issues(response)[0]["diagnostics"]


@pytest.mark.slow  # builds an app of its own (~1 s)
def test_body_too_large_is_413(request_body: dict[str, Any]) -> None:
    small = create_app(app_settings(max_body_bytes=500))
    with TestClient(small) as limited:
        response = limited.post("/cds-services/patient-view", json=request_body)
        assert response.status_code == 413
        assert _issues(response)[0]["code"] == "too-costly"

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
            body = json.dumps(request_body).encode()
            for start in range(0, len(body), 200):
                yield body[start : start + 200]

        streamed = limited.post(
            "/cds-services/patient-view",
            content=chunks(),
            headers={"Content-Type": "application/json"},
        )
        assert streamed.status_code == 413


def test_cors_preflight_from_the_sandbox(client: TestClient) -> None:
    response = client.options(
        "/cds-services/patient-view",
        headers={
            "Origin": "https://sandbox.cds-hooks.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://sandbox.cds-hooks.org"
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed
    assert "content-type" in allowed


def test_cors_refuses_an_unknown_origin(client: TestClient) -> None:
    response = client.options(
        "/cds-services",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in response.headers


def test_prefetch_key_holding_another_resource_type_is_400(
    client: TestClient, request_body: dict[str, Any]
) -> None:
    observation = request_body["prefetch"]["observations"]["entry"][0]
    request_body["prefetch"]["conditions"]["entry"].append(observation)
    response = client.post("/cds-services/patient-view", json=request_body)
    assert response.status_code == 400
    assert _expressions(response) == ["prefetch.conditions.entry[1].resource.resourceType"]


def test_included_resources_of_other_types_are_accepted(
    client: TestClient, request_body: dict[str, Any]
) -> None:
    included = {"resource": request_body["prefetch"]["patient"], "search": {"mode": "include"}}
    request_body["prefetch"]["conditions"]["entry"].append(included)
    assert client.post("/cds-services/patient-view", json=request_body).status_code == 200


@pytest.mark.parametrize("value", [None, {"resourceType": "OperationOutcome", "issue": []}])
def test_optional_prefetch_the_client_could_not_fill_is_ignored(
    client: TestClient, request_body: dict[str, Any], value: Any
) -> None:
    for key in ("procedures", "medications", "referrals"):
        request_body["prefetch"][key] = value
    response = client.post("/cds-services/patient-view", json=request_body)
    assert response.status_code == 200, response.text
    assert len(response.json()["cards"]) == 1


def test_elements_the_triage_does_not_read_never_fail_a_request(
    client: TestClient, request_body: dict[str, Any]
) -> None:
    """The sandbox's draft medication order has no `intent`; a gender outside the value set or
    a link without a URL are not read either: only what the rules use is validated."""
    request_body["prefetch"]["patient"]["gender"] = "F"
    request_body["prefetch"]["medications"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": [{"relation": "self"}],
        "entry": [
            {
                "resource": {
                    "resourceType": "MedicationRequest",
                    "status": "draft",
                    "subject": {"reference": f"Patient/{request_body['context']['patientId']}"},
                    "medicationCodeableConcept": {"text": "Ibuprofen 400 mg"},
                }
            }
        ],
    }
    response = client.post("/cds-services/patient-view", json=request_body)
    assert response.status_code == 200, response.text
    draft = request_body["prefetch"].pop("medications")["entry"][0]["resource"]
    request_body["hook"] = "order-select"
    request_body["context"]["draftOrders"] = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {**draft, "id": "med-1"}}],
    }
    request_body["context"]["selections"] = ["MedicationRequest/med-1"]
    response = client.post("/cds-services/order-select", json=request_body)
    assert response.status_code == 200, response.text


def _condition(body: dict[str, Any]) -> dict[str, Any]:
    condition: dict[str, Any] = body["prefetch"]["conditions"]["entry"][0]["resource"]
    return condition


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (
            lambda b: _condition(b).update(onsetDateTime="0001-01-01T00:00:00+14:00"),
            "prefetch.conditions.entry[0].resource.onsetDateTime",
        ),
        (
            lambda b: _condition(b).update(recordedDate="9999-12-31T23:00:00-14:00"),
            "prefetch.conditions.entry[0].resource.recordedDate",
        ),
        (
            lambda b: _condition(b).update(onsetAge={"value": 1e6}),
            "prefetch.conditions.entry[0].resource.onsetAge.value",
        ),
        (
            lambda b: _condition(b).update(onsetAge={"value": -3000}),
            "prefetch.conditions.entry[0].resource.onsetAge.value",
        ),
        (lambda b: b.update(hookInstance="x" * 201), "hookInstance"),
        (lambda b: b.update(hookInstance="a\x00b"), "hookInstance"),
    ],
    ids=["offset-before-year-1", "offset-after-9999", "age-1e6", "age-negative", "long", "nul"],
)
def test_values_that_cannot_be_represented_are_400_with_the_path(
    client: TestClient, request_body: dict[str, Any], change: Any, path: str
) -> None:
    change(request_body)
    response = client.post("/cds-services/patient-view", json=request_body)
    assert response.status_code == 400, response.text
    assert path in _expressions(response)


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_400(
    client: TestClient, request_body: dict[str, Any], number: str
) -> None:
    _condition(request_body).update(onsetAge={"value": "NUMBER"})
    text = json.dumps(request_body).replace('"NUMBER"', number)
    response = client.post(
        "/cds-services/patient-view", content=text, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "x\\ud83d"])
def test_an_unpaired_surrogate_anywhere_is_400(
    client: TestClient, request_body: dict[str, Any], escape: str
) -> None:
    _condition(request_body)["code"]["coding"][0]["display"] = "SURROGATE"
    text = json.dumps(request_body).replace("SURROGATE", escape)
    response = client.post(
        "/cds-services/patient-view", content=text, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert "surrogate" in response.json()["issue"][0]["diagnostics"]


def test_a_paired_surrogate_escape_is_text(
    client: TestClient, request_body: dict[str, Any]
) -> None:
    _condition(request_body)["code"]["coding"][0]["display"] = "EMOJI"
    text = json.dumps(request_body).replace("EMOJI", "\\ud83d\\ude00")
    response = client.post(
        "/cds-services/patient-view", content=text, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text


def test_readme_states_the_prefetch_discovery_gives(client: TestClient) -> None:
    readme = (ROOT / "README.md").read_text()
    (service, *_) = client.get("/cds-services").json()["services"]
    for key, template in service["prefetch"].items():
        assert f"| `{key}` | `{template}` |" in readme, key
