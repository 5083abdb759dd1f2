"""Facts from a record: status, time and medicines read the way the rules rely on."""

import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from cds_service.cards import describe
from cds_service.codes import CodeIndex
from cds_service.facts import FactSet, build_facts
from cds_service.fhir_model import (
    Condition,
    MedicationRequest,
    MedicationStatement,
    Observation,
    Procedure,
)
from cds_service.knowledge import Knowledge, load_knowledge
from cds_service.prefetch import Entry, PatientRecord, components
from cds_service.relevance import readers
from tests.conftest import ROOT
from tests.fhir_input import validated

TODAY = date(2026, 11, 1)
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SUBJECT = {"reference": "Patient/p"}


def _condition(code: str, **members: Any) -> Entry[Condition]:
    resource = {
        "resourceType": "Condition",
        "id": code,
        "code": {"coding": [{"system": SNOMED, "code": code}]},
        "subject": SUBJECT,
        **members,
    }
    return Entry(validated(Condition, resource), f"Condition/{code}")


def _request(status: str, authored: str, **medication: Any) -> Entry[MedicationRequest]:
    resource = {
        "resourceType": "MedicationRequest",
        "status": status,
        "intent": "order",
        "subject": SUBJECT,
        "authoredOn": authored,
        **medication,
    }
    return Entry(validated(MedicationRequest, resource), None)


def _facts(knowledge: Knowledge, **record: Any) -> FactSet:
    return build_facts(PatientRecord(patient_id="p", **record), knowledge, TODAY)


def _of(facts: FactSet, kind: str, concept: str) -> dict[str, Any] | None:
    """The fact of `kind` about `concept`, as a plain dict (any fact type's fields)."""
    found = [f for f in facts.facts if f["type"] == kind and f.get("concept") == concept]
    return dict(found[0]) if found else None


def test_abatement_ends_a_condition_marked_active(knowledge: Knowledge) -> None:
    retention = _condition("267064002", abatementDateTime="2019-05-01")
    assert _of(_facts(knowledge, conditions=[retention]), "finding", "cauda-equina-sign") is None
    future = _condition("267064002", abatementDateTime="2027-01-01")
    assert _of(_facts(knowledge, conditions=[future]), "finding", "cauda-equina-sign")


def test_a_finding_is_new_when_started_or_recorded_recently_or_undated(
    knowledge: Knowledge,
) -> None:
    def new(**members: Any) -> bool:
        fact = _of(
            _facts(knowledge, conditions=[_condition("267064002", **members)]),
            "finding",
            "cauda-equina-sign",
        )
        assert fact is not None
        return bool(fact["new"])

    assert new(onsetDateTime="2026-10-20")
    assert not new(onsetDateTime="2020-09-01")
    assert not new(onsetDateTime="2020-09-01", recordedDate="2026-10-30")  # long-standing
    assert new(recordedDate="2026-10-30")
    assert new()  # undated: cannot be shown to be long-standing


def test_generic_chronic_pain_is_back_pain_only_beside_a_back_pain_code(
    knowledge: Knowledge,
) -> None:
    generic = _condition("82423001", onsetDateTime="1999-12-01")
    assert not [f for f in _facts(knowledge, conditions=[generic]).facts if f["type"] == "episode"]
    back = _condition("279039007", onsetDateTime="2026-10-01")
    episode = [
        f for f in _facts(knowledge, conditions=[generic, back]).facts if f["type"] == "episode"
    ]
    assert episode[0]["weeks"] > 1000  # the episode starts at the generic code's onset


def test_a_procedure_done_is_a_finding(knowledge: Knowledge) -> None:
    laminectomy = validated(
        Procedure,
        {
            "resourceType": "Procedure",
            "status": "completed",
            "code": {"coding": [{"system": SNOMED, "code": "387731002"}]},
            "subject": SUBJECT,
            "performedDateTime": "2023-05-10",
        },
    )
    facts = _facts(knowledge, procedures=[Entry(laminectomy, "Procedure/p1")])
    assert _of(facts, "finding", "prior-spine-surgery")


def test_a_procedures_reason_is_a_finding_while_it_is_new(knowledge: Knowledge) -> None:
    def hip_xray(performed: str, reason: str) -> Entry[Procedure]:
        resource = {
            "resourceType": "Procedure",
            "status": "completed",
            "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "73502"}]},
            "reasonCode": [{"coding": [{"system": SNOMED, "code": reason}]}],
            "subject": SUBJECT,
            "performedDateTime": performed,
        }
        return Entry(validated(Procedure, resource), "Procedure/x1")

    fall = _facts(knowledge, procedures=[hip_xray("2026-10-28", "161898004")])
    found = _of(fall, "finding", "minor-fall")
    assert found is not None
    assert (found["new"], found["last_days"]) == (True, 4)
    (evidence,) = fall.evidence[found["id"]]
    assert (evidence.reference, evidence.stated) == ("Procedure/x1", True)
    assert describe(evidence).endswith(
        "the reason recorded for the procedure Procedure\\/x1, 2026-10-28"
    )
    old = _facts(knowledge, procedures=[hip_xray("2024-10-28", "161898004")])
    assert _of(old, "finding", "minor-fall") is None  # a fall two years ago is history


def test_a_prescriptions_reason_is_a_finding_and_a_cancer_one_counts_at_any_age(
    knowledge: Knowledge,
) -> None:
    def letrozole(authored: str, code: str, status: str = "active") -> Entry[MedicationRequest]:
        reason = {"coding": [{"system": ICD10CM, "code": code}]}
        coded = {"coding": [{"system": RXNORM, "code": "72965"}], "text": "letrozole"}
        medicine = _request(status, authored, medicationCodeableConcept=coded, reasonCode=[reason])
        return Entry(medicine.resource, "MedicationRequest/m1")

    for_cancer = _facts(knowledge, medications=[letrozole("2021-03-01", "C50.911")])
    found = _of(for_cancer, "finding", "cancer")
    assert found is not None  # a cancer history, five years on
    (evidence,) = for_cancer.evidence[found["id"]]
    assert "the reason recorded for the prescription" in describe(evidence)
    for_ovulation = _facts(knowledge, medications=[letrozole("2026-09-28", "E28.2")])
    assert _of(for_ovulation, "finding", "cancer") is None
    in_error = _facts(
        knowledge, medications=[letrozole("2021-03-01", "C50.911", "entered-in-error")]
    )
    assert _of(in_error, "finding", "cancer") is None


def test_medicine_exposure_spans_prescriptions_and_is_current_while_active(
    knowledge: Knowledge,
) -> None:
    coded = {"medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "312617"}]}}
    medications = [
        _request("stopped", "2026-03-01", **coded),
        _request("active", "2026-09-01", **coded),
    ]
    fact = _of(_facts(knowledge, medications=medications), "medication", "systemic-corticosteroids")
    assert fact is not None
    assert fact["current"] is True
    assert fact["span_weeks"] == round((TODAY - date(2026, 3, 1)).days / 7, 2)
    stopped = [_request("stopped", "2025-01-01", **coded)]
    fact = _of(_facts(knowledge, medications=stopped), "medication", "systemic-corticosteroids")
    assert fact is not None
    assert fact["current"] is False


def test_a_statement_is_dated_by_its_effective_period(knowledge: Knowledge) -> None:
    statement = validated(
        MedicationStatement,
        {
            "resourceType": "MedicationStatement",
            "status": "completed",
            "medicationCodeableConcept": {"text": "Oxycodone 5 mg tablets"},
            "subject": SUBJECT,
            "effectivePeriod": {"start": "2025-01-01", "end": "2025-07-01"},
        },
    )
    fact = _of(_facts(knowledge, medications=[Entry(statement, None)]), "medication", "opioids")
    assert fact is not None
    assert fact["span_weeks"] == round((date(2025, 7, 1) - date(2025, 1, 1)).days / 7, 2)


def test_uncoded_medicine_text_matches_by_ingredient_name_and_says_so(
    knowledge: Knowledge,
) -> None:
    text = {"medicationCodeableConcept": {"text": "Tacrolimus 1 mg capsule"}}
    facts = _facts(knowledge, medications=[_request("active", "2026-01-01", **text)])
    fact = _of(facts, "medication", "immunosuppressants")
    assert fact is not None
    (evidence,) = facts.evidence[fact["id"]]
    assert "matched by the name 'tacrolimus', not by code" in evidence.display
    unrelated = {"medicationCodeableConcept": {"text": "Tacrolimusine (not a medicine)"}}
    facts = _facts(knowledge, medications=[_request("active", "2026-01-01", **unrelated)])
    assert _of(facts, "medication", "immunosuppressants") is None  # whole words only


def test_an_old_open_order_counts_as_taken_only_for_a_medicine_that_feeds_a_red_flag(
    knowledge: Knowledge,
) -> None:
    """An order left open for over `active_order_max_days` is stale, not current use; but for
    an immunosuppressant, anticoagulant or systemic corticosteroid the record still says the
    patient takes it, so it counts, and its line says why (blind case round4 adalimumab)."""
    adalimumab = {"medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "327361"}]}}
    facts = _facts(knowledge, medications=[_request("active", "2025-03-10", **adalimumab)])
    fact = _of(facts, "medication", "immunosuppressants")
    assert fact is not None
    assert fact["current"] is True
    (line,) = facts.evidence[fact["id"]]
    assert "an order still open, last written 2025-03-10 and not renewed since" in str(line.value)
    renewed = [_request("active", "2025-03-10", **adalimumab)]
    renewed.append(_request("active", "2026-10-01", **adalimumab))
    facts = _facts(knowledge, medications=renewed)
    fact = _of(facts, "medication", "immunosuppressants")
    assert fact is not None
    assert fact["current"] is True
    (line,) = facts.evidence[fact["id"]]
    assert "still open" not in str(line.value)  # current by its renewal: nothing to check
    stopped = [_request("stopped", "2025-03-10", **adalimumab)]
    fact = _of(_facts(knowledge, medications=stopped), "medication", "immunosuppressants")
    assert fact is not None
    assert fact["current"] is False
    burst = {
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "312617"}]},
        "dispenseRequest": {"expectedSupplyDuration": {"value": 5, "unit": "days", "code": "d"}},
    }
    old_burst = [_request("active", "2025-03-10", **burst)]  # its 5 days' supply says it ended
    fact = _of(_facts(knowledge, medications=old_burst), "medication", "systemic-corticosteroids")
    assert fact is not None
    assert fact["current"] is False
    opioid = {"medicationCodeableConcept": {"text": "Oxycodone 5 mg tablets"}}
    fact = _of(
        _facts(knowledge, medications=[_request("active", "2025-03-10", **opioid)]),
        "medication",
        "opioids",
    )
    assert fact is not None
    assert fact["current"] is False


def test_medicines_not_taken_are_ignored(knowledge: Knowledge) -> None:
    coded = {"medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "312617"}]}}
    for status in ("cancelled", "entered-in-error", "draft"):
        facts = _facts(knowledge, medications=[_request(status, "2026-09-01", **coded)])
        assert _of(facts, "medication", "systemic-corticosteroids") is None


def test_icd10cm_subtrees_match_by_prefix_and_block_range() -> None:
    index = CodeIndex("icd")
    index.add("icd", "C50", "cancer", descendants=True)
    index.add("icd", "C00-C14", "cancer", descendants=True)
    index.add("icd", "M54.50", "back-pain", descendants=False)
    assert index.concepts("icd", "C50.911") == ("cancer",)
    assert index.concepts("icd", "C07") == ("cancer",)
    assert index.concepts("icd", "C15.3") == ()
    assert index.concepts("icd", "M5450") == ("back-pain",)
    assert index.concepts("icd", "M54.51") == ()  # an exact code includes no siblings
    assert index.concepts("other", "C50") == ()


@pytest.mark.slow  # loads a copy of the knowledge base (~1 s)
def test_a_site_can_qualify_generic_pain_by_a_back_body_site(tmp_path: Path) -> None:
    """`back_body_site` in config.yaml names a value set a site adds (none ships verified)."""
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    (rules / "valuesets" / "back-body-site.yaml").write_text(
        "concept: back-body-site\ntitle: Back\nfact: finding\n"
        "sources: {site: {title: Local list, url: 'https://example.org', version: '1'}}\n"
        "codes:\n  - {system: snomed, code: '123', display: Lumbar region, source: site}\n"
    )
    config = rules / "config.yaml"
    config.write_text(config.read_text() + "back_body_site: back-body-site\n")
    knowledge = load_knowledge(rules)
    site = {"bodySite": [{"coding": [{"system": SNOMED, "code": "123"}]}]}
    generic = _condition("82423001", onsetDateTime="2025-01-01", **site)
    assert [f for f in _facts(knowledge, conditions=[generic]).facts if f["type"] == "episode"]
    elsewhere = _condition("82423001", onsetDateTime="2025-01-01")
    assert not [
        f for f in _facts(knowledge, conditions=[elsewhere]).facts if f["type"] == "episode"
    ]


def _observation(code: str, system: str = SNOMED, **members: Any) -> Entry[Observation]:
    resource = {
        "resourceType": "Observation",
        "id": code,
        "status": "final",
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": SUBJECT,
        "effectiveDateTime": "2026-10-30",
        **members,
    }
    return Entry(validated(Observation, resource), f"Observation/{code}")


def _coded(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


@pytest.mark.parametrize(
    ("members", "present"),
    [
        ({}, True),  # observed, no value: the finding was seen
        ({"valueBoolean": True}, True),
        ({"valueBoolean": False}, False),
        ({"valueCodeableConcept": _coded(SNOMED, "52101004")}, True),  # Present
        ({"valueCodeableConcept": _coded(SNOMED, "2667000")}, False),  # Absent
        ({"valueCodeableConcept": _coded("http://loinc.org", "LA32-8")}, False),  # No
        ({"interpretation": [_coded(V3, "NEG")]}, False),
        ({"dataAbsentReason": _coded("http://x", "not-asked")}, False),
    ],
)
def test_an_observation_of_a_finding_says_present_or_absent(
    knowledge: Knowledge, members: dict[str, Any], present: bool
) -> None:
    facts = _facts(knowledge, observations=[_observation("267064002", **members)])
    assert (_of(facts, "finding", "cauda-equina-sign") is not None) is present
    assert _of(facts, "finding", "risk-named-in-text") is None


def test_an_observation_of_a_finding_with_an_unreadable_value_is_named_not_dropped(
    knowledge: Knowledge,
) -> None:
    unread = _observation("267064002", valueString="?? 300 mL")
    facts = _facts(knowledge, observations=[unread])
    assert _of(facts, "finding", "cauda-equina-sign") is None
    (evidence,) = facts.evidence[_of(facts, "finding", "risk-named-in-text")["id"]]  # type: ignore[index]
    assert evidence.reference == "Observation/267064002"
    assert "cannot read" in (evidence.value or "")


def test_a_finding_as_the_coded_answer_counts_and_an_old_one_does_not(
    knowledge: Knowledge,
) -> None:
    symptom = _observation(
        "75325-1", "http://loinc.org", valueCodeableConcept=_coded(SNOMED, "422868009")
    )
    assert _of(_facts(knowledge, observations=[symptom]), "finding", "weight-loss")
    old = _observation(
        "75325-1",
        "http://loinc.org",
        valueCodeableConcept=_coded(SNOMED, "422868009"),
        effectiveDateTime="2025-01-01",  # beyond observed_finding_days
    )
    assert _of(_facts(knowledge, observations=[old]), "finding", "weight-loss") is None


def _weight(day: str, kg: float) -> Entry[Observation]:
    entry = _observation(
        "29463-7",
        "http://loinc.org",
        id=day,
        effectiveDateTime=day,
        valueQuantity={
            "value": kg,
            "unit": "kg",
            "system": "http://unitsofmeasure.org",
            "code": "kg",
        },
    )
    return Entry(entry.resource, f"Observation/{day}")


def test_weight_loss_is_a_fall_from_the_highest_earlier_weight_to_the_latest(
    knowledge: Knowledge,
) -> None:
    def lost(*weights: tuple[str, float]) -> bool:
        facts = _facts(knowledge, observations=[_weight(d, kg) for d, kg in weights])
        return _of(facts, "finding", "weight-loss") is not None

    assert lost(("2026-02-01", 80), ("2026-10-01", 75.5))  # 5.6%
    assert not lost(("2026-02-01", 80), ("2026-10-01", 76.5))  # 4.4%
    assert not lost(("2026-02-01", 75.5), ("2026-10-01", 80))  # a gain
    assert not lost(("2026-10-01", 75))  # one weight is no trend
    assert not lost(("2025-06-01", 90), ("2026-10-01", 75))  # the high is past the lookback


def test_a_fall_in_weight_recorded_as_intended_is_not_unexplained_weight_loss(
    knowledge: Knowledge,
) -> None:
    weights = [_weight("2026-02-01", 80), _weight("2026-10-01", 73)]
    assert _of(_facts(knowledge, observations=weights), "finding", "weight-loss") is not None
    diet = _condition("416528001", clinicalStatus={"coding": [{"code": "active"}]})
    facts = _facts(knowledge, observations=weights, conditions=[diet])
    assert _of(facts, "finding", "weight-loss") is None  # intended: explained
    assert _of(facts, "finding", "intentional-weight-loss") is not None
    over = _condition("416528001", clinicalStatus={"coding": [{"code": "resolved"}]})
    facts = _facts(knowledge, observations=weights, conditions=[over])
    assert _of(facts, "finding", "weight-loss") is not None  # a past diet explains nothing now
    coded = _condition("422868009")  # unexplained weight loss, coded: still counts
    facts = _facts(knowledge, observations=weights, conditions=[diet, coded])
    assert _of(facts, "finding", "weight-loss") is not None


@pytest.mark.parametrize("unit", ["F", "°F", "deg F", "[degF]", "fahrenheit"])
def test_a_temperature_unit_is_read_in_any_of_its_spellings(
    knowledge: Knowledge, unit: str
) -> None:
    reading = _observation(
        "8310-5", "http://loinc.org", valueQuantity={"value": 101.3, "unit": unit}
    )
    fact = _of(_facts(knowledge, observations=[reading]), "observation", "body-temperature")
    assert fact is not None
    assert fact["value"] == pytest.approx(38.5)


def test_a_laboratory_flag_is_read_when_the_unit_is_not(knowledge: Knowledge) -> None:
    odd = {"value": 3.1, "unit": "mg/100 mL"}
    flagged = _observation(
        "1988-5", "http://loinc.org", valueQuantity=odd, interpretation=[_coded(V3, "H")]
    )
    fact = _of(_facts(knowledge, observations=[flagged]), "observation", "crp")
    assert fact is not None
    assert (fact.get("flag"), fact.get("value")) == ("high", None)
    unflagged = _observation("1988-5", "http://loinc.org", valueQuantity=odd)
    assert _of(_facts(knowledge, observations=[unflagged]), "observation", "crp") is None


@pytest.mark.parametrize(
    ("answer", "pregnant"),
    [
        (("http://loinc.org", "LA15173-0"), True),  # US Core / LOINC: Pregnant
        (("http://snomed.info/sct", "77386006"), True),  # IPS: Pregnant
        (("http://loinc.org", "LA26683-5"), False),  # Not pregnant
        (("http://loinc.org", "LA4489-6"), False),  # Unknown
    ],
)
def test_a_pregnancy_status_observation_is_read_by_its_answer(
    knowledge: Knowledge, answer: tuple[str, str], pregnant: bool
) -> None:
    status = _observation("82810-3", "http://loinc.org", valueCodeableConcept=_coded(*answer))
    facts = _facts(knowledge, observations=[status])
    assert (_of(facts, "finding", "pregnancy") is not None) is pregnant


def test_a_red_flag_result_in_a_unit_that_cannot_be_converted_is_named_not_dropped(
    knowledge: Knowledge,
) -> None:
    odd = _observation("8310-5", "http://loinc.org", valueQuantity={"value": 102, "unit": "deg"})
    facts = _facts(knowledge, observations=[odd])
    assert _of(facts, "observation", "body-temperature") is None
    risk = _of(facts, "finding", "risk-named-in-text")
    assert risk is not None
    (evidence,) = facts.evidence[risk["id"]]
    assert "cannot convert (deg)" in (evidence.value or "")


def test_who_icd10_codes_are_looked_up_as_icd10cm(knowledge: Knowledge) -> None:
    who, cm = "http://hl7.org/fhir/sid/icd-10", knowledge.system_uri("icd-10-cm")
    for code in ("G83.4", "C79.5", "M46.3", "M54.5"):
        assert knowledge.concepts(who, code) == knowledge.concepts(cm, code) != ()
    assert knowledge.concepts("http://example.org/local", "G83.4") == ()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("Bacillus Calmette-Guerin vaccine (BCG) for tuberculosis, live", False),
        ("Immunization against tuberculosis", False),
        ("Screening for malignant neoplasm of breast", False),
        ("Pulmonary tuberculosis, on treatment", True),
        ("Osteomyelitis after BCG vaccination; tuberculosis", True),  # another clause names it
    ],
)
def test_a_vaccine_or_a_screening_does_not_name_the_disease_it_is_for(
    knowledge: Knowledge, text: str, named: bool
) -> None:
    assert bool(knowledge.findings_named(text)) is named


@pytest.mark.parametrize(
    ("text", "onset", "checked"),
    [
        ("Harnverhalt seit gestern, Reithosenanästhesie", "2026-10-31", True),
        ("Knee sprain", None, True),  # undated: it cannot be shown to be old
        ("Harnverhalt seit 2019", "2019-03-01", False),  # old: listed as not judged
        ("Back strain at work, denies fever", "2026-10-31", False),  # read: a term denied
    ],
)
def test_a_new_entry_in_text_only_that_names_no_known_term_is_a_risk_to_check(
    knowledge: Knowledge, text: str, onset: str | None, checked: bool
) -> None:
    resource = {"resourceType": "Condition", "code": {"text": text}, "subject": SUBJECT}
    if onset:
        resource["onsetDateTime"] = onset
    facts = _facts(knowledge, conditions=[Entry(validated(Condition, resource), "Condition/t1")])
    risk = _of(facts, "finding", "risk-named-in-text")
    assert (risk is not None) is checked
    assert bool(facts.unjudged) is not checked
    if risk is not None:
        (evidence,) = facts.evidence[risk["id"]]
        assert "text only" in (evidence.value or "")


def test_a_temperature_inside_a_vital_signs_panel_is_a_temperature(knowledge: Knowledge) -> None:
    temperature = {"value": 38.9, "unit": "Cel", "system": "http://unitsofmeasure.org"}
    panel = _observation(
        "85353-1",
        "http://loinc.org",
        component=[
            {"code": _coded("http://loinc.org", "8867-4"), "valueQuantity": {"value": 96}},
            {"code": _coded("http://loinc.org", "8310-5"), "valueQuantity": temperature},
        ],
    )
    parts = [Entry(part, panel.reference) for part in components(panel.resource)]
    assert [p.resource.effectiveDateTime for p in parts] == [date(2026, 10, 30)] * 2
    facts = _facts(knowledge, observations=[panel, *parts])
    fever = [
        f for f in facts.facts if f["type"] == "observation" and f["concept"] == "body-temperature"
    ]
    assert [f["value"] for f in fever] == [38.9]
    assert facts.evidence[fever[0]["id"]][0].reference == "Observation/85353-1"


def test_a_result_is_read_by_its_code_not_by_the_words_of_its_name(knowledge: Knowledge) -> None:
    def unknown(text: str, **value: Any) -> Entry[Observation]:
        coding = {"system": "http://example.org/lab", "code": "CA125"}
        resource = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [coding], "text": text},
            "effectiveDateTime": "2026-10-30",
            **value,
        }
        return Entry(validated(Observation, resource), "Observation/CA125")

    result = unknown("Cancer antigen 125", valueQuantity={"value": 40, "unit": "U/mL"})
    assert _of(_facts(knowledge, observations=[result]), "finding", "risk-named-in-text") is None
    raw = TypeAdapter(Observation).dump_python(result.resource, exclude_none=True)
    assert not readers(knowledge)("Observation")(raw)  # not even read
    symptom = unknown("new urinary retention")
    assert _of(_facts(knowledge, observations=[symptom]), "finding", "risk-named-in-text")
