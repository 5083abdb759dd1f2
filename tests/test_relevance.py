"""Which raw resources the triage reads (and so validates) and which it passes over."""

from datetime import date
from typing import Any

import pytest

from cds_service.knowledge import Knowledge, load_knowledge
from cds_service.prefetch import _readable
from cds_service.relevance import readers

LOINC, SNOMED = "http://loinc.org", "http://snomed.info/sct"
CPT = "http://www.ama-assn.org/go/cpt"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"


def _coded(kind: str, system: str, code: Any) -> dict[str, Any]:
    return {"resourceType": kind, "code": {"coding": [{"system": system, "code": code}]}}


def _ended(condition: dict[str, Any], *codes: Any) -> dict[str, Any]:
    coding = [{"code": code} for code in codes or ["resolved"]]
    return {**condition, "clinicalStatus": {"coding": coding}}


@pytest.mark.parametrize(
    ("resource", "read"),
    [
        (_coded("Observation", LOINC, "8310-5"), True),
        (_coded("Observation", LOINC, "2345-7"), False),
        (_coded("Condition", "http://hl7.org/fhir/sid/icd-10-cm", "C50.911"), True),
        (_coded("Condition", SNOMED, "44054006"), True),  # active, no value set's: unjudged
        (_ended(_coded("Condition", SNOMED, "44054006")), False),  # over: nothing to judge
        (_ended(_coded("Condition", SNOMED, "44054006"), "remission", "inactive"), False),
        (_ended(_coded("Condition", SNOMED, "44054006"), "resolved", "active"), True),
        (_ended(_coded("Condition", SNOMED, "44054006"), "resolved", None), True),  # malformed
        (
            {**_coded("Condition", SNOMED, "44054006"), "clinicalStatus": {"coding": "resolved"}},
            True,
        ),
        (_ended(_coded("Condition", SNOMED, "363346000")), True),  # a cancer, though resolved
        (_coded("Condition", SNOMED, "38341003"), False),  # hypertension: known irrelevant
        (
            {
                "resourceType": "Condition",
                "code": {
                    "coding": [
                        {"system": SNOMED, "code": "38341003"},
                        {"system": SNOMED, "code": "363346000"},  # and a cancer
                    ]
                },
            },
            True,
        ),
        (_coded("Condition", "http://hl7.org/fhir/sid/icd-10-cm", "I10"), False),  # a subtree
        (_ended({"resourceType": "Condition", "code": "x"}), True),  # malformed
        (_ended({"resourceType": "Condition", "code": None}), True),  # null: validation decides
        (_ended({"resourceType": "Condition"}), False),  # no code at all, and over
        (_coded("Condition", SNOMED, ["not", "a", "code"]), True),  # malformed: validated
        ({"resourceType": "Condition", "code": {"coding": "x"}}, True),
        ({"resourceType": "Condition", "code": {"coding": [5]}}, True),
        ({"resourceType": "Condition"}, True),
        (_coded("Procedure", SNOMED, "80146002"), False),  # an appendectomy
        (  # a hip X-ray done because of a fall: the reason is a finding
            {
                **_coded("Procedure", CPT, "73502"),
                "reasonCode": [{"coding": [{"system": SNOMED, "code": "161898004"}]}],
            },
            True,
        ),
        ({**_coded("Procedure", SNOMED, "22298006"), "reasonCode": {"text": "x"}}, True),
        (  # a vital-signs panel whose component is a temperature
            {
                **_coded("Observation", LOINC, "85353-1"),
                "component": [{"code": {"coding": [{"system": LOINC, "code": "8310-5"}]}}],
            },
            True,
        ),
        (  # a panel of components no rule reads (a diastolic pressure)
            {
                **_coded("Observation", LOINC, "85354-9"),
                "component": [{"code": {"coding": [{"system": LOINC, "code": "8462-4"}]}}],
            },
            False,
        ),
        (  # a medicine no value set lists, prescribed for a breast cancer
            {
                "resourceType": "MedicationRequest",
                "medicationCodeableConcept": {"text": "letrozole"},
                "reasonCode": [{"coding": [{"system": ICD10CM, "code": "C50.911"}]}],
            },
            True,
        ),
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
    ],
)
def test_resources_are_read_when_a_rule_can_use_them(
    knowledge: Knowledge, resource: Any, read: bool
) -> None:
    assert _reads(knowledge, resource) is read


def _reads(knowledge: Knowledge, resource: dict[str, Any], today: date | None = None) -> bool:
    """What the reader of the resource's type says of it."""
    return readers(knowledge, today)(resource["resourceType"])(resource)


def test_an_entry_that_is_not_a_resource_object_is_kept_for_validation(
    knowledge: Knowledge,
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "entry": [
            {"resource": _coded("Observation", LOINC, "2345-7")},  # no value set's: passed over
            {"resource": "not an object"},
            "not an entry",
        ],
    }
    kept, positions = _readable(bundle, readers(knowledge), "Observation")
    assert kept["entry"] == [{"resource": "not an object"}, "not an entry"]
    assert positions == [1, 2]  # so validation names them where they were sent


def _temperature(when: Any, *codings: Any) -> dict[str, Any]:
    coding = [{"system": LOINC, "code": "8310-5"}, *codings]
    return {
        "resourceType": "Observation",
        "code": {"coding": coding},
        "effectiveDateTime": when,
        "valueQuantity": {"value": 38.5, "unit": "Cel"},
    }


TODAY = date(2026, 11, 1)  # body temperature counts for 30 days (config lookback_days)


@pytest.mark.parametrize(
    ("resource", "read"),
    [
        (_temperature("2026-10-02T08:00:00Z"), True),  # 30 days: counts
        (_temperature("2026-10-01T20:00:00-05:00"), True),  # 2026-10-02 in UTC: the day's margin
        (_temperature("2026-09-30T23:59:00-05:00"), False),  # 2026-10-01 in UTC: not counted
        (_temperature("2026-10-02T01:00:00+05:00"), False),  # 2026-10-01 in UTC, written a day on
        (_temperature("2026-10-03T01:00:00+05:00"), True),  # 2026-10-02 in UTC: counts
        (_temperature("2026-09-29"), False),
        (_temperature("1996-04-01T08:00:00Z"), False),  # decades of vitals cost nothing
        (_temperature("2026-09-29", {"system": SNOMED, "code": "386661006"}), True),  # a finding
        (_temperature("2026-09-29", {"system": LOINC, "code": "2345-7"}), False),  # no value set
        (_temperature("2026-09-29", "not a coding"), True),  # malformed: validation names it
        (_temperature("2026-10-32"), True),  # not a day: validation names it
        (_temperature("2026-10-01T25:00:00Z"), True),  # near the window, a malformed time: likewise
        (_temperature("2026-10-20 08:00"), True),
        # a day written more than a day before the window is past it whatever the rest says:
        # passed over unread, as a result no value set holds
        (_temperature("2020-01-01T25:00:00Z"), False),
        (_temperature("2020-01-01 08:00"), False),
        (_temperature("2026-02-30"), False),
        (_temperature(20260929), True),
        (_temperature("2026"), True),  # a partial date is read, not guessed at
        (  # not a result (no valueQuantity): not windowed
            {k: v for k, v in _temperature("2026-09-29").items() if k != "valueQuantity"},
            True,
        ),
    ],
)
def test_results_past_their_window_are_passed_over(resource: Any, read: bool) -> None:
    knowledge = load_knowledge()
    assert _reads(knowledge, resource, TODAY) is read
    assert _reads(knowledge, resource) is True  # no day: read whenever recorded
