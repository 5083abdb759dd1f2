"""Which raw resources the triage reads (and so validates) and which it passes over."""

from typing import Any

import pytest

from cds_service.knowledge import Knowledge
from cds_service.relevance import relevance

LOINC, SNOMED = "http://loinc.org", "http://snomed.info/sct"


def _coded(kind: str, system: str, code: Any) -> dict[str, Any]:
    return {"resourceType": kind, "code": {"coding": [{"system": system, "code": code}]}}


@pytest.mark.parametrize(
    ("resource", "read"),
    [
        (_coded("Observation", LOINC, "8310-5"), True),
        (_coded("Observation", LOINC, "2345-7"), False),
        (_coded("Condition", "http://hl7.org/fhir/sid/icd-10-cm", "C50.911"), True),
        (_coded("Condition", SNOMED, "38341003"), True),  # every Condition is classified
        (_coded("Condition", SNOMED, ["not", "a", "code"]), True),  # malformed: validated
        ({"resourceType": "Condition", "code": {"coding": "x"}}, True),
        ({"resourceType": "Condition", "code": {"coding": [5]}}, True),
        ({"resourceType": "Condition"}, True),
        (_coded("Procedure", SNOMED, "22298006"), False),
        (
            {"resourceType": "MedicationRequest", "medicationReference": {"reference": "#m1"}},
            True,
        ),
        (
            {
                "resourceType": "MedicationRequest",
                "medicationCodeableConcept": {"text": "Naproxen"},
            },
            True,
        ),
        (
            {"resourceType": "MedicationRequest", "medicationCodeableConcept": {"text": "Statin"}},
            False,
        ),
        ({"resourceType": "Patient"}, True),
        ({"resourceType": "ServiceRequest"}, True),
        ("not an object", True),
    ],
)
def test_resources_are_read_when_a_rule_can_use_them(
    knowledge: Knowledge, resource: Any, read: bool
) -> None:
    assert relevance(knowledge)(resource) is read
