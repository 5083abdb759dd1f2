"""The slim FHIR input models (`cds_service.fhir_model`): dates, quantities, references, codes."""

from dataclasses import FrozenInstanceError
from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from cds_service.fhir_model import (
    _DATE_TIME,
    Age,
    Bundle,
    Condition,
    Observation,
    OtherResource,
    Patient,
    PrefetchValue,
    Quantity,
    Reference,
    parse_fhir_date,
)
from tests.fhir_input import validated

SUBJECT = {"reference": "Patient/p"}


def _error_types(model: Any, value: dict[str, Any]) -> list[tuple[tuple[int | str, ...], str]]:
    """(loc, type) of every error `model` reports on `value`."""
    with pytest.raises(ValidationError) as error:
        validated(model, value)
    return [(err["loc"], err["type"]) for err in error.value.errors()]


@pytest.mark.parametrize(
    ("value", "day"),
    [
        ("2026-11-01", date(2026, 11, 1)),
        ("2024-02-29", date(2024, 2, 29)),
        ("2026", date(2026, 1, 1)),  # a partial date reads as its first day
        ("2026-03", date(2026, 3, 1)),
        ("2026-11-01T10:00:00Z", date(2026, 11, 1)),
        ("2026-11-01T10:00:00.123456789Z", date(2026, 11, 1)),
        ("2026-11-01T23:30:00-05:00", date(2026, 11, 2)),  # 04:30 UTC the next day
        ("2026-11-01T01:00:00+14:00", date(2026, 10, 31)),  # 11:00 UTC the day before
    ],
)
def test_dates_and_date_times_read_as_utc_calendar_days(value: str, day: date) -> None:
    assert parse_fhir_date(value) == day


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("2026-13", "is not a valid FHIR date"),
        ("2026-11-1", "is not a valid FHIR date"),
        ("2026-11-01T10:00:00", "is not a valid FHIR date"),  # a time needs its offset
        ("2026-11-01T10:00Z", "is not a valid FHIR date"),  # and its seconds
        ("2026-11-01T10:00:00+15:00", "is not a valid FHIR date"),
        ("2026-02-30", "is not a date that exists"),
        ("2025-02-29", "is not a date that exists"),
        ("0000-01-01", "is not a date that exists"),
        ("9999-12-31T23:00:00-14:00", "is not a date that exists"),  # past year 9999 in UTC
        ("2026-02-30T10:00:00Z", "is not a date that exists"),
        ("2026-12-31T23:59:60Z", "is not a date that exists"),  # no leap second in Python
    ],
)
def test_invalid_dates_are_refused_with_the_reason(value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_fhir_date(value)


def _utc_day(value: str) -> date | str:
    """The UTC day of a FHIR date or dateTime, read in full by the standard library."""
    try:
        if "T" in value:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC).date()
        parts = [int(part) for part in value.split("-")] + [1, 1]
        return date(parts[0], parts[1], parts[2])
    except (OverflowError, ValueError):
        return "refused"


@settings(max_examples=1000)
@given(st.from_regex(_DATE_TIME, fullmatch=True))
def test_the_shortcuts_read_every_date_as_the_standard_library_does(value: str) -> None:
    try:
        read: date | str = parse_fhir_date(value)
    except ValueError:
        read = "refused"
    assert read == _utc_day(value)


def test_a_date_must_be_a_string() -> None:
    with pytest.raises(ValueError, match="must be a FHIR date or dateTime string"):
        parse_fhir_date(20261101)


def test_a_date_element_names_its_path_when_invalid() -> None:
    condition = {"resourceType": "Condition", "subject": SUBJECT, "onsetPeriod": {"start": "x"}}
    assert _error_types(Condition, condition) == [(("onsetPeriod", "start"), "value_error")]


def test_quantities_must_be_finite_and_ages_plausible() -> None:
    assert validated(Quantity, {"value": 38.5, "unit": "Cel"}).value == 38.5
    assert _error_types(Quantity, {"value": float("nan")}) == [(("value",), "finite_number")]
    assert _error_types(Quantity, {"value": float("inf")}) == [(("value",), "finite_number")]
    assert validated(Age, {"value": 150}).value == 150
    assert _error_types(Age, {"value": 151}) == [(("value",), "less_than_equal")]
    assert _error_types(Age, {"value": -1}) == [(("value",), "greater_than_equal")]


def test_references_keep_what_the_triage_reads_and_ignore_the_rest() -> None:
    reference = validated(Reference, {**SUBJECT, "identifier": {"value": "x"}})
    assert reference.reference == "Patient/p"
    assert not hasattr(reference, "identifier")
    with pytest.raises(FrozenInstanceError):
        reference.reference = "Patient/q"  # type: ignore[misc]  # elements are frozen


def test_a_condition_needs_its_subject() -> None:
    condition = {"resourceType": "Condition", "code": {"text": "Back pain"}}
    assert _error_types(Condition, condition) == [(("subject",), "missing")]


def test_status_codes_are_checked_against_their_value_sets() -> None:
    active = {"coding": [{"system": "x", "code": "active"}]}
    condition = validated(
        Condition, {"resourceType": "Condition", "subject": SUBJECT, "clinicalStatus": active}
    )
    assert condition.clinicalStatus is not None
    assert condition.clinicalStatus.coding[0].code == "active"
    made_up = {"coding": [{"code": "better"}]}
    assert _error_types(
        Condition, {"resourceType": "Condition", "subject": SUBJECT, "clinicalStatus": made_up}
    ) == [(("clinicalStatus", "coding", 0, "code"), "literal_error")]
    observation = {"resourceType": "Observation", "status": "done", "code": {"text": "T"}}
    assert _error_types(Observation, observation) == [(("status",), "literal_error")]


def test_codes_are_free_text_outside_status_elements() -> None:
    observation = validated(
        Observation,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}], "text": "T"},
            "valueCodeableConcept": {"coding": [{"code": "any-local-code"}]},
        },
    )
    assert observation.code.coding[0].code == "8310-5"
    assert observation.valueCodeableConcept is not None
    assert observation.valueCodeableConcept.coding[0].code == "any-local-code"


def test_ids_are_checked_because_cards_echo_them() -> None:
    assert validated(Patient, {"resourceType": "Patient", "id": "pt-1.A"}).id == "pt-1.A"
    for bad in ("a/b", "", "x" * 65, "a b"):
        errors = _error_types(Patient, {"resourceType": "Patient", "id": bad})
        assert errors == [(("id",), "string_pattern_mismatch")], bad


def test_a_patient_is_deceased_by_flag_or_date() -> None:
    def deceased(**members: Any) -> bool:
        return validated(Patient, {"resourceType": "Patient", **members}).deceased

    assert not deceased()
    assert not deceased(deceasedBoolean=False)
    assert deceased(deceasedBoolean=True)
    assert deceased(deceasedDateTime="2020")


def test_bundle_entries_parse_by_resource_type() -> None:
    bundle = validated(
        Bundle,
        {
            "resourceType": "Bundle",
            "entry": [
                {"resource": {"resourceType": "Patient", "id": "p", "birthDate": "1970"}},
                {"resource": {"resourceType": "Encounter", "id": "e", "class": {"code": "AMB"}}},
                {"search": {"mode": "outcome"}},
            ],
        },
    )
    patient, encounter, empty = (entry.resource for entry in bundle.entry)
    assert isinstance(patient, Patient)
    assert patient.birthDate == date(1970, 1, 1)
    assert type(encounter) is OtherResource  # a type the triage does not read: kept, unchecked
    assert encounter.resourceType == "Encounter"
    assert empty is None


def test_an_entry_without_a_resource_type_is_refused_at_its_path() -> None:
    bundle = {"resourceType": "Bundle", "entry": [{"resource": {"id": "x"}}]}
    assert _error_types(Bundle, bundle) == [(("entry", 0, "resource"), "union_tag_not_found")]


def test_a_known_resource_type_is_validated_as_that_type() -> None:
    bundle = {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Condition"}}]}
    assert _error_types(Bundle, bundle) == [
        (("entry", 0, "resource", "Condition", "subject"), "missing")
    ]


def test_a_prefetch_value_is_a_bundle_a_patient_or_another_resource() -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(PrefetchValue)
    assert isinstance(adapter.validate_python({"resourceType": "Bundle"}), Bundle)
    assert isinstance(adapter.validate_python({"resourceType": "Patient"}), Patient)
    assert type(adapter.validate_python({"resourceType": "Condition"})) is OtherResource
