"""Facts: the patient's record turned into flat engine facts, each with the evidence behind it.

Codes become clinical concepts through the value sets in `rules/`. Findings are pre-aggregated
(one fact per concept, every matching Condition kept as evidence) so a rule fires once per
combination of concepts, not once per duplicate Condition.
"""

from collections import defaultdict
from dataclasses import dataclass, field
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
    conditions = [entry for entry in record.conditions if counts(entry.resource)]
    _add_patient(facts, record, today)
    _add_findings(facts, knowledge, conditions)
    _add_episode(facts, knowledge, record, conditions, today)
    _add_observations(facts, knowledge, record, today)
    _add_treatments(facts, knowledge, record, today)
    _add_orders(facts, knowledge, record)
    facts.referred = _referred(knowledge, record)
    return facts


def counts(condition: Condition) -> bool:
    """A Condition counts when active (or status absent) and not refuted or entered in error."""
    clinical = (
        {c.code for c in condition.clinicalStatus.coding} if condition.clinicalStatus else set()
    )
    verification = (
        {c.code for c in condition.verificationStatus.coding}
        if condition.verificationStatus
        else set()
    )
    return (not clinical or bool(clinical & _COUNTING_CLINICAL)) and not (
        verification & _NOT_COUNTING_VERIFICATION
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


def _add_patient(facts: FactSet, record: PatientRecord, today: date) -> None:
    birth = record.patient.birthDate if record.patient else None
    if birth is not None:
        age = today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
        facts.add({"type": "patient", "age": age}, [])


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


def _add_findings(facts: FactSet, knowledge: Knowledge, conditions: list[Entry[Condition]]) -> None:
    by_concept: dict[str, list[Evidence]] = defaultdict(list)
    for entry in conditions:
        when = onset(entry.resource, None)
        for concept, coding in _matches(knowledge, entry.resource.code, "finding"):
            by_concept[concept].append(_evidence(knowledge, entry, concept, coding, when))
    for concept, evidence in by_concept.items():
        facts.add({"type": "finding", "concept": concept}, evidence)


def _add_episode(
    facts: FactSet,
    knowledge: Knowledge,
    record: PatientRecord,
    conditions: list[Entry[Condition]],
    today: date,
) -> None:
    """The back-pain episode, from the earliest active back-pain Condition's onset (SPEC 4)."""
    birth = record.patient.birthDate if record.patient else None
    episode = set(knowledge.config.episode_concepts)
    starts: list[tuple[date, Evidence]] = []
    for entry in conditions:
        start = onset(entry.resource, birth)
        for concept, coding in _matches(knowledge, entry.resource.code, "finding"):
            if start is not None and concept in episode:
                starts.append((start, _evidence(knowledge, entry, concept, coding, start)))
    if starts:
        start, evidence = min(starts, key=lambda item: item[0])
        weeks = round((today - start).days / 7, 2)
        facts.add({"type": "episode", "weeks": weeks}, [evidence])


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
    for entry in record.observations:
        observation = entry.resource
        quantity = observation.valueQuantity
        when = _observed(observation)
        if observation.status in _IGNORED_OBSERVATION or when is None or quantity is None:
            continue
        for concept, coding in _matches(knowledge, observation.code, "observation"):
            lookback = knowledge.config.lookback_days.get(concept)
            value_set = knowledge.value_sets[concept]
            conversion = value_set.units.get(quantity.code or quantity.unit or "")
            if lookback is None or (today - when).days > lookback:
                continue
            if conversion is None or quantity.value is None:
                continue
            value = round(quantity.value * conversion.factor + conversion.offset, 3)
            shown = f"{quantity.value:g} {quantity.unit or quantity.code}"
            evidence = _evidence(knowledge, entry, concept, coding, when, shown)
            facts.add({"type": "observation", "concept": concept, "value": value}, [evidence])


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
        for concept, coding in _matches(knowledge, entry.resource.code, "order"):
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
