"""Facts: the patient's record turned into flat engine facts, each with the evidence behind it.

Codes become clinical concepts through the value sets in `rules/`. Findings are pre-aggregated
(one fact per concept, every matching Condition kept as evidence) so a rule fires once per
combination of concepts, not once per duplicate Condition.
"""

from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from cds_service.fhir_model import CodeableConcept, Coding, Condition, Observation
from cds_service.knowledge import FactKind, Knowledge
from cds_service.prefetch import Entry, PatientRecord

_COUNTING_CLINICAL = {"active", "recurrence", "relapse"}
_NOT_COUNTING_VERIFICATION = {"refuted", "entered-in-error"}
_IGNORED_OBSERVATION = {"entered-in-error", "cancelled"}
_PROCEDURE_DONE = {"completed", "in-progress"}
_MEDICATION_TAKEN = {"active", "completed", "stopped", "on-hold"}
_REFERRAL_OPEN = {"draft", "active", "on-hold"}


@dataclass(frozen=True)
class Evidence:
    """One finding behind a fact, as a clinician reads it in the card."""

    resource_type: str
    reference: str | None
    display: str
    system: str
    code: str
    when: date | None = None
    value: str | None = None


@dataclass
class FactSet:
    facts: list[dict[str, Any]] = field(default_factory=list)
    evidence: dict[str, tuple[Evidence, ...]] = field(default_factory=dict)
    referred: set[str] = field(default_factory=set)
    """Specialties already in draftOrders or open referrals (no suggestion duplicates them)."""

    def add(self, fact: dict[str, Any], evidence: list[Evidence]) -> None:
        fact_id = f"f{len(self.facts)}"
        self.facts.append({"id": fact_id, **fact})
        self.evidence[fact_id] = tuple(evidence)


def build_facts(record: PatientRecord, knowledge: Knowledge, today: date) -> FactSet:
    """All facts about `record` as of `today`."""
    facts = FactSet()
    birth = record.patient.birthDate if record.patient else None
    confirmed = [entry for entry in record.conditions if not refuted(entry.resource)]
    active = [entry for entry in confirmed if is_active(entry.resource)]
    _add_patient(facts, record, today)
    _add_findings(facts, knowledge, confirmed, birth)
    _add_episode(facts, knowledge, active, birth, today)
    _add_observations(facts, knowledge, record, today)
    _add_treatments(facts, knowledge, record, today)
    _add_orders(facts, knowledge, record)
    facts.referred = _referred(knowledge, record)
    return facts


def refuted(condition: Condition) -> bool:
    """Refuted or entered in error: the Condition is ignored altogether."""
    status = condition.verificationStatus
    return bool(status and {c.code for c in status.coding} & _NOT_COUNTING_VERIFICATION)


def is_active(condition: Condition) -> bool:
    """Active, recurrence or relapse, or no clinical status recorded."""
    status = condition.clinicalStatus
    return (
        not status or not status.coding or any(c.code in _COUNTING_CLINICAL for c in status.coding)
    )


def _matches(
    knowledge: Knowledge, concept: CodeableConcept | None, kind: FactKind
) -> list[tuple[str, Coding]]:
    """(concept, coding) for each coding of `concept` that a value set of `kind` holds."""
    found: list[tuple[str, Coding]] = []
    for coding in concept.coding if concept else ():
        for name in knowledge.concepts(coding.system, coding.code):
            if knowledge.value_sets[name].fact == kind:
                found.append((name, coding))
    return found


def _evidence(
    knowledge: Knowledge,
    entry: Entry[Any],
    concept: str,
    coding: Coding,
    when: date | None,
    value: str | None = None,
) -> Evidence:
    return Evidence(
        resource_type=entry.resource.resourceType,
        reference=entry.reference,
        display=coding.display or knowledge.value_sets[concept].title,
        system=knowledge.system_name(coding.system),
        code=coding.code or "",
        when=when,
        value=value,
    )


def years_between(start: date, end: date) -> int:
    """Whole years from `start` to `end` (an age)."""
    return end.year - start.year - ((end.month, end.day) < (start.month, start.day))


def _add_patient(facts: FactSet, record: PatientRecord, today: date) -> None:
    patient = record.patient
    if patient is not None and patient.birthDate is not None:
        age = years_between(patient.birthDate, today)
        evidence = Evidence(
            resource_type="Patient",
            reference=f"Patient/{record.patient_id}",
            display="Age",
            system="",
            code="",
            when=patient.birthDate,
            value=f"{age} years",
        )
        facts.add({"type": "patient", "age": age}, [evidence])


def onset(condition: Condition, birth: date | None) -> date | None:
    """When a Condition started: onset[x], else the date it was recorded."""
    if condition.onsetDateTime is not None:
        return condition.onsetDateTime
    if condition.onsetPeriod is not None and condition.onsetPeriod.start is not None:
        return condition.onsetPeriod.start
    if condition.onsetAge is not None and condition.onsetAge.value is not None and birth:
        years = int(condition.onsetAge.value)
        return birth.replace(year=birth.year + years, day=min(birth.day, 28))
    return condition.recordedDate


def _add_findings(
    facts: FactSet, knowledge: Knowledge, conditions: list[Entry[Condition]], birth: date | None
) -> None:
    """One fact per concept of the active Conditions (or any status, where the value set says)."""
    by_concept: dict[str, list[Evidence]] = defaultdict(list)
    for entry in conditions:
        when = onset(entry.resource, birth)
        active = is_active(entry.resource)
        for concept, coding in _matches(knowledge, entry.resource.code, "finding"):
            if active or knowledge.value_sets[concept].counts_when_inactive:
                by_concept[concept].append(_evidence(knowledge, entry, concept, coding, when))
    for concept, evidence in by_concept.items():
        facts.add({"type": "finding", "concept": concept}, evidence)


def _add_episode(
    facts: FactSet,
    knowledge: Knowledge,
    conditions: list[Entry[Condition]],
    birth: date | None,
    today: date,
) -> None:
    """The back-pain episode, from the earliest active back-pain Condition's onset (SPEC 4)."""
    episode = set(knowledge.config.episode_concepts)
    starts: list[tuple[date, Evidence]] = []
    for entry in conditions:
        start = onset(entry.resource, birth)
        for concept, coding in _matches(knowledge, entry.resource.code, "finding"):
            if start is not None and concept in episode:
                starts.append((start, _evidence(knowledge, entry, concept, coding, start)))
    if starts:
        start, first = min(starts, key=lambda item: item[0])
        weeks = round((today - start).days / 7, 2)
        fact: dict[str, Any] = {"type": "episode", "weeks": weeks}
        shown = f"back pain for {weeks:.0f} weeks"
        if birth is not None:
            fact["onset_age"] = years_between(birth, start)
            shown += f", from age {fact['onset_age']}"
        facts.add(fact, [replace(first, value=shown)])


def _observed(observation: Observation) -> date | None:
    period = observation.effectivePeriod
    return (
        observation.effectiveDateTime
        or (period.start if period else None)
        or observation.effectiveInstant
        or observation.issued
    )


def _add_observations(
    facts: FactSet, knowledge: Knowledge, record: PatientRecord, today: date
) -> None:
    """One fact per counting Observation within its concept's lookback window."""
    for entry in record.observations:
        observation = entry.resource
        when = _observed(observation)
        if observation.status in _IGNORED_OBSERVATION or when is None:
            continue
        for concept, coding in _matches(knowledge, observation.code, "observation"):
            if (today - when).days > knowledge.config.lookback_days[concept]:
                continue
            result = _result(knowledge, concept, observation)
            if result is not None:
                fact, shown = result
                evidence = _evidence(knowledge, entry, concept, coding, when, shown)
                facts.add({"type": "observation", "concept": concept, **fact}, [evidence])


def _result(
    knowledge: Knowledge, concept: str, observation: Observation
) -> tuple[dict[str, Any], str] | None:
    """The fact members of a result (value in the canonical unit, or positive) and its text."""
    quantity, coded = observation.valueQuantity, observation.valueCodeableConcept
    if quantity is not None and quantity.value is not None:
        unit = quantity.code or quantity.unit or ""
        conversion = knowledge.value_sets[concept].units.get(unit)
        if conversion is None:
            return None  # a unit we cannot convert: never guess
        value = round(quantity.value * conversion.factor + conversion.offset, 3)
        return {"value": value}, f"{quantity.value:g} {quantity.unit or unit}"
    if coded is not None and coded.coding:
        positives = knowledge.positive_results[concept]
        positive = any((c.system, c.code) in positives for c in coded.coding)
        return {"positive": positive}, coded.coding[0].display or coded.text or "coded result"
    return None


def _add_treatments(
    facts: FactSet, knowledge: Knowledge, record: PatientRecord, today: date
) -> None:
    """Prior treatment, one fact per concept, dated from its earliest start."""
    started: list[tuple[Entry[Any], CodeableConcept | None, date | None]] = []
    for done in record.procedures:
        procedure = done.resource
        if procedure.status in _PROCEDURE_DONE:
            period = procedure.performedPeriod
            start = procedure.performedDateTime or (period.start if period else None)
            started.append((done, procedure.code, start))
    for taken in record.medications:
        medication = taken.resource
        if medication.status in _MEDICATION_TAKEN:
            started.append((taken, medication.medicationCodeableConcept, medication.authoredOn))
    by_concept: dict[str, list[Evidence]] = defaultdict(list)
    for entry, code, start in started:
        for concept, coding in _matches(knowledge, code, "treatment") if start else ():
            by_concept[concept].append(_evidence(knowledge, entry, concept, coding, start))
    for concept, evidence in by_concept.items():
        first = min(e.when for e in evidence if e.when is not None)
        weeks = round((today - first).days / 7, 2)
        facts.add({"type": "treatment", "concept": concept, "weeks": weeks}, evidence)


def _add_orders(facts: FactSet, knowledge: Knowledge, record: PatientRecord) -> None:
    by_concept: dict[str, list[Evidence]] = defaultdict(list)
    for entry in record.draft_orders:
        request = entry.resource
        codings = CodeableConcept(
            coding=[
                *(request.code.coding if request.code else ()),
                *(request.performerType.coding if request.performerType else ()),
            ]
        )
        for concept, coding in _matches(knowledge, codings, "order"):
            by_concept[concept].append(
                _evidence(knowledge, entry, concept, coding, entry.resource.authoredOn)
            )
    for concept, evidence in by_concept.items():
        facts.add({"type": "order", "concept": concept}, evidence)


def _referred(knowledge: Knowledge, record: PatientRecord) -> set[str]:
    """Specialties that a draft order or an open referral already sends the patient to."""
    snomed, nucc = knowledge.system_uri("snomed"), knowledge.system_uri("nucc")
    referred: set[str] = set()
    requests = [
        *record.draft_orders,
        *(r for r in record.referrals if r.resource.status in _REFERRAL_OPEN),
    ]
    for entry in requests:
        codings = [
            *(entry.resource.code.coding if entry.resource.code else ()),
            *(entry.resource.performerType.coding if entry.resource.performerType else ()),
        ]
        for key, specialty in knowledge.specialties.items():
            wanted = {(nucc, specialty.nucc.code)}
            if specialty.referral is not None:
                wanted.add((snomed, specialty.referral.code))
            if any((c.system, c.code) in wanted for c in codings):
                referred.add(key)
    return referred
