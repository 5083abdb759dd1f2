"""Every call the CDS Hooks sandbox's client makes, as its code builds them, is answered.

The fast companion of tests/test_sandbox_app.py, which runs the sandbox itself in Chromium; this
one also covers the PAMA tab's order-sign call, which nothing in the sandbox's interface triggers.

The contexts follow the sandbox (github.com/cds-hooks/sandbox @ 3b7e255): `generateContext` of
each tab (src/components/RxView, RxSign, Pama), and `callServices`
(src/retrieve-data-helpers/service-exchange.js), which labels a call with the hook of the
current screen: the PAMA tab's order-sign call says `order-select`.
"""

import copy
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import load_example

PATIENT = "pt-acute-mri"  # a record with two weeks of low back pain
CT_72133 = {
    "code": "72133",
    "display": "Computed tomography, lumbar spine; without contrast material, followed by "
    "contrast material(s) and further sections",
    "system": "http://www.ama-assn.org/go/cpt",
}
LOW_BACK_PAIN = {
    "code": "279039007",
    "display": "Low back pain (finding)",
    "system": "http://snomed.info/sct",
}


def _medication_request() -> dict[str, Any]:
    """createFhirResource (src/reducers/medication-reducers.js) for an R4 server."""
    return {
        "resourceType": "MedicationRequest",
        "id": "request-123",
        "status": "draft",
        "subject": {"reference": f"Patient/{PATIENT}"},
        "authoredOn": "2026-11-01",
        "dosageInstruction": [
            {
                "timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [
                    {
                        "doseQuantity": {
                            "value": 1,
                            "system": "http://unitsofmeasure.org",
                            "code": "{pill}",
                        }
                    }
                ],
            }
        ],
        "intent": "order",
        "medicationCodeableConcept": {
            "text": "Ibuprofen 400 MG Oral Tablet",
            "coding": [
                {
                    "display": "Ibuprofen 400 MG Oral Tablet",
                    "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                    "code": "197806",
                }
            ],
        },
    }


def _pama_order(study: dict[str, Any], reasons: list[dict[str, Any]]) -> dict[str, Any]:
    """The PAMA tab's generateContext (src/components/Pama/pama.jsx); JSON drops `text`
    when nothing is chosen yet."""
    code: dict[str, Any] = {"coding": [study]}
    if "display" in study:
        code["text"] = study["display"]
    return {
        "selections": ["ServiceRequest/example-request-id"],
        "draftOrders": {
            "resourceType": "Bundle",
            "entry": [
                {
                    "resource": {
                        "resourceType": "ServiceRequest",
                        "id": "example-request-id",
                        "status": "draft",
                        "intent": "plan",
                        "code": code,
                        "subject": {"reference": f"Patient/{PATIENT}"},
                        "reasonCode": [{"coding": [r], "text": r["display"]} for r in reasons],
                    }
                }
            ],
        },
    }


CALLS: dict[str, tuple[str, str, dict[str, Any], list[str]]] = {
    # tab: (service called, hook label, tab context, rules of the cards expected)
    "patient-view": ("patient-view", "patient-view", {}, ["primary-care-acute-nonspecific"]),
    "rx-view": (
        "order-select",
        "order-select",
        {
            "selections": ["MedicationRequest/request-123"],
            "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": "MEDICATION"}]},
        },
        ["primary-care-acute-nonspecific"],
    ),
    "rx-sign": (
        "order-sign",
        "order-sign",
        {"draftOrders": {"resourceType": "Bundle", "entry": [{"resource": "MEDICATION"}]}},
        ["primary-care-acute-nonspecific"],
    ),
    "pama-opened": (
        "order-select",
        "order-select",
        _pama_order({}, []),
        ["primary-care-acute-nonspecific"],
    ),
    "pama-select": (
        "order-select",
        "order-select",
        _pama_order(CT_72133, [LOW_BACK_PAIN]),
        ["imaging-acute-without-red-flag", "primary-care-acute-nonspecific"],
    ),
    "pama-sign": (
        "order-sign",
        "order-select",  # the sandbox's label (see the module docstring)
        _pama_order(CT_72133, [LOW_BACK_PAIN]),
        ["imaging-acute-without-red-flag", "primary-care-acute-nonspecific"],
    ),
}


@pytest.mark.parametrize("tab", CALLS)
def test_each_sandbox_call_is_answered(client: TestClient, tab: str) -> None:
    service, hook, tab_context, rules = CALLS[tab]
    record, _ = load_example("imaging-acute-without-red-flag--order-select-mri")
    tab_context = copy.deepcopy(tab_context)
    for entry in tab_context.get("draftOrders", {}).get("entry", []):
        if entry["resource"] == "MEDICATION":
            entry["resource"] = _medication_request()
    body = {
        "hookInstance": f"sandbox-{tab}",
        "hook": hook,
        "fhirServer": "https://launch.smarthealthit.org/v/r4/fhir",
        "context": {"patientId": PATIENT, "userId": "Practitioner/COREPRACTITIONER1"} | tab_context,
        "prefetch": record["prefetch"],
    }
    response = client.post(f"/cds-services/{service}", json=body)
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    assert [card["extension"]["org.spine-cds.rule"]["id"] for card in cards] == rules
