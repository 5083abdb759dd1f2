"""Facts: the patient's record turned into flat engine facts, each with the evidence behind it.

Codes become clinical concepts through the value sets in `rules/`. Findings are pre-aggregated
(one fact per concept, every matching Condition kept as evidence) so a rule fires once per
combination of concepts, not once per duplicate Condition.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import (
    Any,
    Literal,
    NamedTuple,
    NotRequired,
    TypedDict,
    TypeVar,
    get_args,
    get_type_hints,
)

from cds_service.codes import icd10cm_key
from cds_service.fhir_model import (
    CodeableConcept,
    Coding,
    Condition,
    MedicationRequest,
    MedicationStatement,
    Observation,
    Reference,
)
from cds_service.knowledge import FactKind, Knowledge, Measured
from cds_service.prefetch import Entry, PatientRecord

T = TypeVar("T")
_COUNTING_CLINICAL = {"active", "recurrence", "relapse"}
_RECURRING = {"recurrence", "relapse"}
_NOT_COUNTING_VERIFICATION = {"refuted", "entered-in-error"}
_IGNORED_OBSERVATION = {"entered-in-error", "cancelled"}
_PROCEDURE_DONE = {"completed", "in-progress"}
_MEDICATION_TAKEN = {"active", "completed", "stopped", "on-hold"}
_MEDICATION_CURRENT = {"active", "on-hold"}
_REFERRAL_OPEN = {"draft", "active", "on-hold"}


# --- The fact contract: what the engine's patterns test (engine.py) and cards cite ----------


class PatientFact(TypedDict):
    id: str
    type: Literal["patient"]
    age: int


class EpisodeFact(TypedDict):
    """The back-pain episode: weeks since its onset, and the age it started at."""

    id: str
    type: Literal["episode"]
    weeks: float
    onset_age: NotRequired[int]


class FindingFact(TypedDict):
    """A finding concept (Conditions, procedures done); `new` within `new_finding_days`;
    `last_days` since its latest dated entry."""

    id: str
    type: Literal["finding"]
    concept: str
    new: bool
    last_days: NotRequired[int]


class ObservationFact(TypedDict):
    """A result: a value in the concept's canonical unit, or a coded positive/negative, and
    the laboratory's own flag (`high`, `low`, `abnormal`) when it gives one."""

    id: str
    type: Literal["observation"]
    concept: str
    value: NotRequired[float]
    positive: NotRequired[bool]
    flag: NotRequired[str]


class TreatmentFact(TypedDict):
    """Weeks since the treatment was first done; `last_days` since it was last done; within the
    current back-pain episode, the `sessions` done and the `course_weeks` from the first of them
    to the last (absent: none in the episode)."""

    id: str
    type: Literal["treatment"]
    concept: str
    weeks: float
    last_days: int
    sessions: NotRequired[int]
    course_weeks: NotRequired[float]


class MedicationFact(TypedDict):
    """Weeks since first taken, the span of use, `current`; and `course_weeks` of use within
    the current back-pain episode (absent: none in the episode)."""

    id: str
    type: Literal["medication"]
    concept: str
    weeks: float
    span_weeks: float
    current: bool
    course_weeks: NotRequired[float]


class OrderFact(TypedDict):
    id: str
    type: Literal["order"]
    concept: str


class DerivedFact(TypedDict):
    """Asserted by the engine when a rule `derive`s `concept` (forward chaining)."""

    id: str
    type: Literal["derived"]
    concept: str


Fact = (
    PatientFact
    | EpisodeFact
    | FindingFact
    | ObservationFact
    | TreatmentFact
    | MedicationFact
    | OrderFact
    | DerivedFact
)
FIELDS: dict[str, frozenset[str]] = {
    get_args(get_type_hints(typed)["type"])[0]: frozenset(get_type_hints(typed))
    for typed in get_args(Fact)
}
"""The fields of each fact type, by its `type`: the engine compiles patterns only on these."""


def record_fact_id(index: int) -> str:
    """The id of the record's `index`-th fact (ids order the evidence lines in a card)."""
    return f"f{index}"


def record_fact_order(fact_id: str) -> int:
    """The index of a record fact's id (not a derived fact's)."""
    return int(fact_id.removeprefix("f"))


def derived_id(name: str) -> str:
    return f"derived:{name}"


def derived_fact(name: str) -> DerivedFact:
    return DerivedFact(id=derived_id(name), type="derived", concept=name)


class Evidence(NamedTuple):
    """One finding behind a fact, as a clinician reads it in the card. A named tuple: a record
    makes one per reading, and a frozen dataclass's constructor cost 2.5 times as much."""

    resource_type: str
    reference: str | None
    display: str
    system: str
    code: str
    when: date | None = None
    value: str | None = None
    stated: bool = False
    """A stated reason (`reasonCode`) of a draft order, a procedure done or a medicine, not the
    entry itself."""


@dataclass(frozen=True)
class Referred:
    """A draft order or open referral to a specialty, at its priority (None: not stated)."""

    reference: str | None
    priority: str | None
    draft: bool


@dataclass
class FactSet:
    facts: list[Fact] = field(default_factory=list)
    evidence: dict[str, tuple[Evidence, ...]] = field(default_factory=dict)
    referred: dict[str, list["Referred"]] = field(default_factory=dict)
    """Per specialty, the draft orders and open referrals that already send the patient there."""
    implausible: list[Evidence] = field(default_factory=list)
    """Results ignored because their value is outside the plausible range (a unit mix-up)."""
    unjudged: list[Evidence] = field(default_factory=list)
    """Active Conditions whose codes no value set holds: what the rules could not judge."""

    def next_id(self) -> str:
        """The id the next fact added gets."""
        return record_fact_id(len(self.facts))

    def add(self, fact: Fact, evidence: Iterable[Evidence]) -> None:
        """Add `fact` (its id from `next_id`) with the record entries behind it."""
        self.facts.append(fact)
        self.evidence[fact["id"]] = tuple(evidence)


def build_facts(record: PatientRecord, knowledge: Knowledge, today: date) -> FactSet:
    """All facts about `record` as of `today`."""
    facts = FactSet()
    birth = record.patient.birthDate if record.patient else None
    confirmed = [entry for entry in record.conditions if not refuted(entry.resource)]
    sources = _finding_sources(knowledge, record, confirmed, birth, today)
    unread: list[tuple[str, Evidence]] = []
    readings = _readings(knowledge, record, today, facts.implausible, unread)
    findings = _observed_findings(knowledge, record, today)
    recorded = {c for s in sources for c, coding in s.found if _counts(knowledge, s, c, coding)}
    recorded |= {c for c, _ in findings}
    observed = [
        *findings,
        *_measured(knowledge, readings, recorded),
        *unread,
        *_procedures_named(knowledge, record),
    ]
    _add_patient(facts, record, today)
    _add_findings(facts, knowledge, sources, observed, today)
    active = [s for s in sources if s.condition and s.active]
    episode = _add_episode(facts, knowledge, active, birth, today)
    _add_observations(facts, readings)
    _add_treatments(facts, knowledge, record, today, episode)
    _add_medications(facts, knowledge, record, today, episode)
    _add_orders(facts, knowledge, record)
    facts.referred = _referred(knowledge, record)
    return facts


def refuted(condition: Condition) -> bool:
    """Refuted or entered in error: the Condition is ignored altogether."""
    status = condition.verificationStatus
    return bool(status and {c.code for c in status.coding} & _NOT_COUNTING_VERIFICATION)


def is_active(condition: Condition, today: date) -> bool:
    """Active, recurrence or relapse, or no clinical status recorded; and not abated by `today`."""
    status = condition.clinicalStatus
    counting = (
        not status or not status.coding or any(c.code in _COUNTING_CLINICAL for c in status.coding)
    )
    return counting and not abated(condition, today)


def abated(condition: Condition, today: date) -> bool:
    """An abatement[x] at or before `today` ends the Condition whatever its clinicalStatus."""
    period = condition.abatementPeriod
    ended = condition.abatementDateTime or (period.end or period.start if period else None)
    if ended is not None:
        return ended <= today
    return condition.abatementAge is not None or condition.abatementString is not None


def _matches(
    knowledge: Knowledge, concept: CodeableConcept | None, kind: FactKind
) -> list[tuple[str, Coding]]:
    """(concept, coding) for each coding of `concept` that a value set of `kind` holds."""
    found: list[tuple[str, Coding]] = []
    if concept is None:
        return found
    concepts_of = knowledge.concepts_of
    for coding in concept.coding:  # a loop, not a comprehension: one call less a reading
        for name in concepts_of(coding.system, coding.code, kind):
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
    display = coding.display or knowledge.value_sets[concept].title
    system = knowledge.system_name(coding.system)
    return Evidence(
        entry.resource.resourceType,
        entry.reference,
        display,
        system,
        coding.code or "",
        when,
        value,
    )


def _duration(days: int) -> str:
    """A duration as a card says it: in days under two weeks, else in whole weeks."""
    if days < 14:
        return f"{days} day{'' if days == 1 else 's'}"
    return f"{days / 7:.0f} weeks"


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
        facts.add(PatientFact(id=facts.next_id(), type="patient", age=age), [evidence])


def onset(condition: Condition, birth: date | None) -> date | None:
    """When a Condition started: onset[x], else the date it was recorded. A recurrence or
    relapse started again: the later of its first onset and the date it was recorded."""
    first = _first_onset(condition, birth)
    status = condition.clinicalStatus
    again = status is not None and any(c.code in _RECURRING for c in status.coding)
    if again and first is not None and condition.recordedDate is not None:
        return max(first, condition.recordedDate)
    return first


def _first_onset(condition: Condition, birth: date | None) -> date | None:
    if condition.onsetDateTime is not None:
        return condition.onsetDateTime
    if condition.onsetPeriod is not None and condition.onsetPeriod.start is not None:
        return condition.onsetPeriod.start
    if condition.onsetAge is not None and condition.onsetAge.value is not None and birth:
        year = birth.year + int(condition.onsetAge.value)
        if year <= date.max.year:  # else no such date: the recorded date is all there is
            return birth.replace(year=year, day=min(birth.day, 28))
    return condition.recordedDate


@dataclass(frozen=True)
class _Finding:
    """A coded entry that may be a finding (a Condition, or a Procedure that was done), with
    the finding concepts its codes match, matched once for the findings and the episode."""

    entry: Entry[Any]
    found: list[tuple[str, Coding]]
    when: date | None
    active: bool
    condition: bool
    stated: bool = False


def _finding_sources(
    knowledge: Knowledge,
    record: PatientRecord,
    conditions: list[Entry[Condition]],
    birth: date | None,
    today: date,
) -> list[_Finding]:
    found = [
        _Finding(
            e,
            _sited(knowledge, e.resource, _matches(knowledge, e.resource.code, "finding")),
            onset(e.resource, birth),
            is_active(e.resource, today),
            True,
        )
        for e in conditions
    ]
    for entry in record.procedures:
        if entry.resource.status in _PROCEDURE_DONE:
            performed = _performed(entry)
            matched = _matches(knowledge, entry.resource.code, "finding")
            found.append(_Finding(entry, matched, performed, True, False))
            found += _reasons(knowledge, entry, performed, today)
    for medicine in record.medications:
        if medicine.resource.status in _MEDICATION_TAKEN:
            found += _reasons(knowledge, medicine, _written(medicine.resource), today)
    drafts: list[Entry[Any]] = [*record.draft_orders, *record.draft_medicines]
    for order in drafts:  # the stated indication: a complaint recorded now
        stated = order.resource.authoredOn or today
        for reason in order.resource.reasonCode:
            matched = _matches(knowledge, reason, "finding")
            found.append(_Finding(order, matched, stated, True, True, stated=True))
    return found


def _reasons(
    knowledge: Knowledge, entry: Entry[Any], when: date | None, today: date
) -> list[_Finding]:
    """Why a procedure was done or a medicine prescribed (`reasonCode`): findings recorded on
    `when`, current while they are new (`new_finding_days`), history after."""
    recent = when is None or (today - when).days <= knowledge.config.thresholds["new_finding_days"]
    return [
        _Finding(entry, _matches(knowledge, reason, "finding"), when, recent, False, stated=True)
        for reason in entry.resource.reasonCode
    ]


def _written(medicine: MedicationRequest | MedicationStatement) -> date | None:
    """When a medicine's record was written: the request's date, or the statement's start."""
    if isinstance(medicine, MedicationRequest):
        return medicine.authoredOn
    period = medicine.effectivePeriod
    return medicine.effectiveDateTime or (period and period.start) or medicine.dateAsserted


def _add_findings(
    facts: FactSet,
    knowledge: Knowledge,
    sources: list[_Finding],
    observed: list[tuple[str, Evidence]],
    today: date,
) -> None:
    """One fact per concept of the active entries (or any status, where the value set says),
    and of the findings `observed` in Observations (recorded as such, or measured).

    `new`: at least one entry started (or, undated, was recorded) within `new_finding_days`,
    or carries no date at all (it cannot be shown to be long-standing).
    """
    window = knowledge.config.thresholds["new_finding_days"]
    by_concept: dict[str, list[Evidence]] = defaultdict(list)
    for source in sources:
        for concept, coding in source.found:
            risk = knowledge.value_sets[concept].risk
            if _counts(knowledge, source, concept, coding):
                found = _evidence(knowledge, source.entry, concept, coding, source.when)
                found = found._replace(stated=source.stated)
                by_concept[concept].append(found._replace(value=risk.means) if risk else found)
        unjudged = source.condition and source.active and not source.stated
        if unjudged and _unclassified(knowledge, source.entry):
            _add_unclassified(knowledge, facts, by_concept, source, today)
    for concept, seen in observed:
        by_concept[concept].append(seen)
    for concept, evidence in by_concept.items():
        new = any(e.when is None or (today - e.when).days <= window for e in evidence)
        fact = FindingFact(id=facts.next_id(), type="finding", concept=concept, new=new)
        dated = [e.when for e in evidence if e.when is not None]
        if dated:
            fact["last_days"] = (today - max(dated)).days
        facts.add(fact, evidence)


def _counts(knowledge: Knowledge, source: _Finding, concept: str, coding: Coding) -> bool:
    """The entry `source` records `concept` now (by `coding`): it is active, or its value set
    counts it inactive too. A sequela is history, except for a risk (a late effect still rules
    nothing out) or a disease that outlasts it (osteoporosis)."""
    value_set = knowledge.value_sets[concept]
    lasting = value_set.risk is not None or value_set.sequela_is_current
    current = source.active and (lasting or not _sequela(knowledge, coding))
    return current or value_set.counts_when_inactive


def _sequela(knowledge: Knowledge, coding: Coding) -> bool:
    """An ICD-10-CM code whose 7th character is S: the late effect of an injury or fracture,
    not the injury itself (ICD-10-CM guideline I.C.19.a), so history, as if inactive."""
    if coding.system != knowledge.system_uri("icd-10-cm") or coding.code is None:
        return False
    key = icd10cm_key(coding.code)
    return len(key) == 7 and key[6] == "S"


def _add_unclassified(
    knowledge: Knowledge,
    facts: FactSet,
    by_concept: dict[str, list[Evidence]],
    source: _Finding,
    today: date,
) -> None:
    """An entry no value set classifies: a risk found in text when its words name a red-flag
    finding (not negated) or when it is new and in text only, else one of the entries the
    rules could not judge."""
    named = _named_in_text(knowledge, source.entry, source.when) or _new_text_only(
        knowledge, source, today
    )
    if not named:
        facts.unjudged.append(_entry_evidence(knowledge, source.entry, source.when))
    for risk, evidence in named:
        by_concept[risk].append(evidence)


def _new_text_only(
    knowledge: Knowledge, source: _Finding, today: date
) -> list[tuple[str, Evidence]]:
    """A new entry written in text only, with no code at all, whose words name no term the
    service knows: they may name a red flag in words or a language it does not read
    ("Harnverhalt seit gestern"), so it is a risk to check, not an entry to list as not judged.
    One that names a term only to deny it ("denies fever") was read. New: within
    `new_finding_days`, or undated."""
    code: CodeableConcept | None = source.entry.resource.code
    if knowledge.text_risk is None or code is None or not code.text:
        return []
    if any(coding.code for coding in code.coding) or knowledge.names_a_term(code.text):
        return []
    window = knowledge.config.thresholds["new_finding_days"]
    if source.when is not None and (today - source.when).days > window:
        return []
    said = "written in text only, which this rule set does not read: check it"
    evidence = _entry_evidence(knowledge, source.entry, source.when)._replace(value=said)
    return [(knowledge.text_risk, evidence)]


def _unclassified(knowledge: Knowledge, entry: Entry[Any]) -> bool:
    """No code of the entry is in any value set (read, risk or known irrelevant): the rules
    cannot judge it, so a card may not imply it was checked."""
    code: CodeableConcept | None = entry.resource.code
    codings = code.coding if code else []
    return not any(knowledge.concepts(c.system, c.code) for c in codings)


def _entry_evidence(knowledge: Knowledge, entry: Entry[Any], when: date | None) -> Evidence:
    """An entry as a card names it: its display (or text) and its first code."""
    code: CodeableConcept | None = entry.resource.code
    coding = next((c for c in code.coding if c.code), None) if code else None
    display = (coding.display if coding else None) or (code.text if code else None)
    return Evidence(
        resource_type=entry.resource.resourceType,
        reference=entry.reference,
        display=display or "(no text)",
        system=knowledge.system_name(coding.system) if coding else "",
        code=coding.code or "" if coding else "",
        when=when,
    )


def _add_episode(
    facts: FactSet,
    knowledge: Knowledge,
    conditions: list[_Finding],
    birth: date | None,
    today: date,
) -> date | None:
    """The back-pain episode, from the earliest active back-pain Condition's onset (docs/rules.md);
    its start, if there is one.

    A generic code (`qualified_episode_concepts`, e.g. "Chronic pain") counts only beside
    another back-pain Condition or with a back body site: alone it may be a knee or a migraine.
    """
    config = knowledge.config
    episode, qualified = set(config.episode_concepts), set(config.qualified_episode_concepts)
    beside = any(concept in episode for source in conditions for concept, _ in source.found)
    starts: list[tuple[date, Evidence]] = []
    for source in conditions:
        start, at_back = source.when, _at_back(knowledge, source.entry.resource)
        for concept, coding in source.found:
            counts = concept in episode or (concept in qualified and (beside or at_back))
            if start is not None and counts:
                found = _evidence(knowledge, source.entry, concept, coding, start)
                starts.append((start, found._replace(stated=source.stated)))
    if starts:
        start, first = min(starts, key=lambda item: item[0])
        days = (today - start).days
        fact = EpisodeFact(id=facts.next_id(), type="episode", weeks=round(days / 7, 2))
        shown = f"back pain for {_duration(days)}"
        if birth is not None:
            fact["onset_age"] = years_between(birth, start)
            shown += f", from age {fact['onset_age']}"
        facts.add(fact, [first._replace(value=shown)])
        return start
    return None


def _sited(
    knowledge: Knowledge, condition: Condition, matched: list[tuple[str, Coding]]
) -> list[tuple[str, Coding]]:
    """`matched`, and back pain where a generic pain code (`qualified_episode_concepts`) has
    the back as its body site: pain at the lumbar spine is back pain for every rule."""
    config = knowledge.config
    means = config.back_body_site_means
    generic = [
        coding for concept, coding in matched if concept in config.qualified_episode_concepts
    ]
    if means is not None and generic and _at_back(knowledge, condition):
        return [*matched, (means, generic[0])]
    return matched


def _at_back(knowledge: Knowledge, entry: Any) -> bool:
    """A Condition whose body site is the back (`back_body_site`); any other entry is not."""
    site = knowledge.config.back_body_site
    return (
        site is not None
        and isinstance(entry, Condition)
        and any(
            site in knowledge.concepts(coding.system, coding.code)
            for concept in entry.bodySite
            for coding in concept.coding
        )
    )


def _observed(observation: Observation) -> date | None:
    period = observation.effectivePeriod
    return (
        observation.effectiveDateTime
        or (period.start if period else None)
        or observation.effectiveInstant
        or observation.issued
    )


class _Reading(NamedTuple):
    """A result within its concept's lookback: its value in the canonical unit, or whether it
    is positive, and the laboratory's flag."""

    evidence: Evidence
    value: float | None
    positive: bool | None
    flag: str | None


def _readings(
    knowledge: Knowledge,
    record: PatientRecord,
    today: date,
    implausible: list[Evidence],
    unread: list[tuple[str, Evidence]],
) -> dict[str, list[_Reading]]:
    """Per observation concept, its counting results within the concept's lookback window,
    oldest first. A value outside the plausible range goes to `implausible`, never a reading;
    a value in a unit that cannot be converted, of a concept that feeds a red flag, goes to
    `unread` as a risk the card names (it may hide a red flag)."""
    readings: dict[str, list[_Reading]] = defaultdict(list)
    lookback, plausible = knowledge.config.lookback_days, knowledge.config.plausible
    for entry in record.observations:
        observation = entry.resource
        when = _observed(observation)
        if observation.status in _IGNORED_OBSERVATION or when is None:
            continue
        age = (today - when).days
        for concept, coding in _matches(knowledge, observation.code, "observation"):
            if age > lookback[concept]:
                continue
            result = _result(knowledge, concept, observation)
            if result is None:
                _unconverted(knowledge, entry, concept, coding, when, unread)
                continue
            value, positive, flag, shown = result
            evidence = _evidence(knowledge, entry, concept, coding, when, shown)
            bounds = plausible.get(concept)  # in the canonical unit
            if value is not None and bounds is not None and not bounds[0] <= value <= bounds[1]:
                implausible.append(evidence)  # never a trigger; the cards say so
                continue
            readings[concept].append(_Reading(evidence, value, positive, flag))
    for results in readings.values():
        results.sort(key=lambda reading: reading.evidence.when or date.min)
    return readings


def _unconverted(
    knowledge: Knowledge,
    entry: Entry[Observation],
    concept: str,
    coding: Coding,
    when: date,
    unread: list[tuple[str, Evidence]],
) -> None:
    """A value whose unit cannot be converted, of a concept that feeds a red flag: named on the
    risk card (`Risk.from_text`) so no card reassures past it."""
    quantity = entry.resource.valueQuantity
    risk = knowledge.text_risk
    if quantity is None or quantity.value is None or risk is None:
        return
    if concept not in knowledge.flagging:
        return
    unit = quantity.unit or quantity.code or "no unit"
    title = knowledge.value_sets[concept].title
    said = f"{title} {quantity.value:g} in a unit the service cannot convert ({unit}): check it"
    unread.append((risk, _evidence(knowledge, entry, concept, coding, when, said)))


def _add_observations(facts: FactSet, readings: dict[str, list[_Reading]]) -> None:
    """One fact per reading."""
    for concept, results in readings.items():
        for evidence, value, positive, flag in results:
            fact: ObservationFact = {
                "id": facts.next_id(),
                "type": "observation",
                "concept": concept,
            }
            if value is not None:
                fact["value"] = value
            if positive is not None:
                fact["positive"] = positive
            if flag is not None:
                fact["flag"] = flag
            facts.add(fact, (evidence,))


def _result(
    knowledge: Knowledge, concept: str, observation: Observation
) -> tuple[float | None, bool | None, str | None, str] | None:
    """A result's value in the canonical unit or whether it is positive, the laboratory's
    flag, and its text. A unit we cannot convert gives no value (never a guess), but the flag
    still counts."""
    quantity, coded = observation.valueQuantity, observation.valueCodeableConcept
    flag = _flag(knowledge, observation) if observation.interpretation else None
    shown_flag = f" (flagged {flag} by the laboratory)" if flag else ""
    if quantity is not None and (measured := quantity.value) is not None:
        code, unit = quantity.code, quantity.unit
        conversion = knowledge.conversion(concept, code, unit)
        shown = f"{measured:g} {unit or code or ''}".strip()
        if conversion is None:
            return (None, None, flag, shown + shown_flag) if flag else None
        factor, offset = conversion
        return round(measured * factor + offset, 3), None, flag, shown + shown_flag
    if coded is not None and coded.coding:
        positives = knowledge.positive_results[concept]
        positive = any((c.system, c.code) in positives for c in coded.coding)
        return None, positive, flag, coded.coding[0].display or coded.text or "coded result"
    if flag is not None:
        return None, None, flag, (observation.valueString or "result") + shown_flag
    return None


def _flag(knowledge: Knowledge, observation: Observation) -> str | None:
    """The laboratory's interpretation of a result (config `observed_findings.flags`)."""
    return _looked_up(knowledge.flags, observation.interpretation)


def _looked_up(table: Mapping[tuple[str, str], T], concepts: Iterable[CodeableConcept]) -> T | None:
    """What `table` says of the first coding of `concepts` it lists (by system URI and code)."""
    for concept in concepts:
        for coding in concept.coding:
            said = table.get((coding.system or "", coding.code or ""))
            if said is not None:
                return said
    return None


def _observed_findings(
    knowledge: Knowledge, record: PatientRecord, today: date
) -> list[tuple[str, Evidence]]:
    """Findings recorded as Observations: the Observation's code is the finding and its value
    says present (or, with no value, it was observed), or its coded answer is the finding (a
    symptom, a pregnancy status). Current within the concept's lookback, else
    `observed_finding_days`; a value that says neither present nor absent cannot be read, and
    the card names it."""
    found: list[tuple[str, Evidence]] = []
    for entry in record.observations:
        observation = entry.resource
        coded = _matches(knowledge, observation.code, "finding")
        answer = observation.valueCodeableConcept
        if not coded and answer is None and observation.valueQuantity is not None:
            continue  # a result: a reading (`_readings`), never read by its words
        when = _observed(observation)
        if observation.status in _IGNORED_OBSERVATION or when is None:
            continue
        present = _presence(knowledge, observation, {c for c, _ in coded}) if coded else True
        if not coded:
            coded = _matches(knowledge, answer, "finding")
            present = not _said_absent(knowledge, observation.interpretation)
        worded = observation.valueQuantity is None  # a result is read by its code, not its words
        if not coded and worded and present and _unclassified(knowledge, entry):
            said = [observation.valueString, *(_words(answer) if answer else [])]
            found.extend(_named_in_text(knowledge, entry, when, *said))
        for concept, coding in coded:
            if not _still_current(knowledge, concept, when, today) or present is False:
                continue
            evidence = _evidence(
                knowledge, entry, concept, coding, when, "recorded as an Observation"
            )
            if present is None and knowledge.text_risk is not None:
                title = knowledge.value_sets[concept].title.lower()
                unread = f"an Observation of {title} with a value the service cannot read: check it"
                found.append((knowledge.text_risk, evidence._replace(value=unread)))
            elif present:
                risk = knowledge.value_sets[concept].risk
                found.append((concept, evidence._replace(value=risk.means) if risk else evidence))
    return found


def _procedures_named(knowledge: Knowledge, record: PatientRecord) -> list[tuple[str, Evidence]]:
    """Procedures done that no value set classifies but whose text names a red-flag finding
    ("drainage of spinal epidural abscess")."""
    return [
        named
        for entry in record.procedures
        if entry.resource.status in _PROCEDURE_DONE and _unclassified(knowledge, entry)
        for named in _named_in_text(knowledge, entry, _performed(entry))
    ]


def _said_absent(knowledge: Knowledge, concepts: list[CodeableConcept]) -> bool:
    """An interpretation (or coded value) that says absent or negative."""
    return any(
        knowledge.presence.get((coding.system or "", coding.code or "")) is False
        for concept in concepts
        for coding in concept.coding
    )


def _named_in_text(
    knowledge: Knowledge, entry: Entry[Any], when: date | None, *more: str | None
) -> list[tuple[str, Evidence]]:
    """An entry no value set classifies whose words (its code's text and displays, and `more`)
    name a red-flag finding, not negated: a risk the card names (`Risk.from_text`)."""
    code: CodeableConcept | None = entry.resource.code
    text = "; ".join(filter(None, [*(_words(code) if code else []), *more]))
    named = knowledge.findings_named(text) if text else []
    if not named or knowledge.text_risk is None:
        return []
    titles = " or ".join(knowledge.value_sets[c].title.lower() for c in named)
    said = f"its text names {titles}, but it is not coded: check it"
    return [(knowledge.text_risk, _entry_evidence(knowledge, entry, when)._replace(value=said))]


def _words(concept: CodeableConcept) -> list[str | None]:
    """A CodeableConcept's text and its codings' displays."""
    return [concept.text, *(c.display for c in concept.coding)]


def _presence(knowledge: Knowledge, observation: Observation, concepts: set[str]) -> bool | None:
    """Whether an Observation of a finding says it is present: its boolean or coded value (or
    interpretation), the finding itself as the answer, or no value at all (observed). None: a
    value that says neither."""
    if observation.valueBoolean is not None:
        return observation.valueBoolean
    answer = observation.valueCodeableConcept
    said = _looked_up(
        knowledge.presence, [*([answer] if answer else []), *observation.interpretation]
    )
    if said is not None:
        return said
    if answer is not None:
        answered = {c for c, _ in _matches(knowledge, answer, "finding")}
        return True if answered & concepts else None
    unread = observation.valueQuantity is not None or observation.valueString is not None
    if unread or observation.dataAbsentReason is not None:
        return None if unread else False
    return True


def _still_current(knowledge: Knowledge, concept: str, when: date, today: date) -> bool:
    if knowledge.value_sets[concept].counts_when_inactive:
        return True
    thresholds, lookback = knowledge.config.thresholds, knowledge.config.lookback_days
    return (today - when).days <= lookback.get(concept, thresholds["observed_finding_days"])


def _measured(
    knowledge: Knowledge, readings: dict[str, list[_Reading]], recorded: set[str]
) -> list[tuple[str, Evidence]]:
    """Findings the measurements show (a finding set's `measured` routes), except where a
    finding `recorded` in the record explains the measurement (the route's `unless`)."""
    found: list[tuple[str, Evidence]] = []
    for concept, value_set in knowledge.value_sets.items():
        for route in value_set.measured:
            if recorded.intersection(route.unless):
                continue
            values = [r for r in readings.get(route.observation, []) if r.value is not None]
            shown = _route_met(knowledge, route, values)
            if shown is not None:
                found.append((concept, shown))
    return found


def _route_met(knowledge: Knowledge, route: Measured, readings: list[_Reading]) -> Evidence | None:
    """The evidence of a measured route when its results meet it (readings oldest first)."""
    if route.value is not None:
        comparison = route.value
        met = [
            r
            for r in readings
            if r.value is not None and comparison.admits(r.value, knowledge.threshold)
        ]
        return met[-1].evidence if met else None
    if route.fall_percent is not None and len(readings) >= 2:
        latest = readings[-1]
        highest = max(readings[:-1], key=lambda r: r.value or 0.0)
        top, now = highest.value or 0.0, latest.value or 0.0
        fall = 100 * (top - now) / top if top > 0 else 0.0
        if fall < knowledge.threshold(route.fall_percent):
            return None
        since = highest.evidence.when.isoformat() if highest.evidence.when else "earlier"
        said = (
            f"fell {fall:.0f}% from {highest.evidence.value} ({since}) to {latest.evidence.value}"
        )
        return latest.evidence._replace(value=said)
    return None


def _add_treatments(
    facts: FactSet,
    knowledge: Knowledge,
    record: PatientRecord,
    today: date,
    episode: date | None,
) -> None:
    """Prior treatment (procedures done), one fact per concept, dated from its earliest start;
    the sessions within the episode make its course (care for an earlier episode is history)."""
    by_concept: dict[str, list[tuple[Evidence, date]]] = defaultdict(list)
    for entry in record.procedures:
        start = _performed(entry)
        if entry.resource.status not in _PROCEDURE_DONE or start is None:
            continue
        period = entry.resource.performedPeriod
        end = min(max(period.end, start), today) if period and period.end else start
        for concept, coding in _matches(knowledge, entry.resource.code, "treatment"):
            evidence = _evidence(knowledge, entry, concept, coding, start)
            by_concept[concept].append((evidence, end))
    for concept, done in by_concept.items():
        starts = [evidence.when for evidence, _ in done if evidence.when is not None]
        weeks = round((today - min(starts)).days / 7, 2)
        last = (today - max(end for _, end in done)).days
        fact = TreatmentFact(
            id=facts.next_id(), type="treatment", concept=concept, weeks=weeks, last_days=last
        )
        course = [(e.when, end) for e, end in done if e.when and episode and end >= episode]
        if course and episode is not None:
            began = max(episode, min(start for start, _ in course))
            fact["sessions"] = len(course)
            fact["course_weeks"] = round((max(end for _, end in course) - began).days / 7, 2)
        facts.add(fact, [evidence for evidence, _ in done])


def _performed(entry: Entry[Any]) -> date | None:
    period = entry.resource.performedPeriod
    performed: date | None = entry.resource.performedDateTime or (period.start if period else None)
    return performed


@dataclass(frozen=True)
class _Exposure:
    """One medicine entry: when it started and ended, whether it is still being taken, and
    whether it is an order still open but too old to say so (`stale`)."""

    start: date
    end: date
    current: bool
    stale: bool = False


def _exposure(
    medication: MedicationRequest | MedicationStatement, today: date, stale_days: float
) -> _Exposure | None:
    """The dates of a taken medicine (None: not taken, or undated).

    An order still `active` but not renewed for `stale_days` is not a medicine being taken now
    (EHRs and Synthea leave orders open for years); it is `stale` when nothing in it says it
    ended (no supply stated, or one still running), so `_counted` may still count it.
    """
    if medication.status not in _MEDICATION_TAKEN:
        return None
    current = medication.status in _MEDICATION_CURRENT
    stale = False
    if isinstance(medication, MedicationRequest):
        start = end = medication.authoredOn
        old = start is not None and (today - start).days > stale_days
        supplied = _supply_days(medication)
        if start is not None and supplied:
            end = min(start + timedelta(days=supplied), today)
        stale = current and old and not (supplied and end is not None and end < today)
        current = current and start is not None and not old
    else:
        period = medication.effectivePeriod
        start = _written(medication)
        end = (period and period.end) or start
    return _Exposure(start, end or start, current, stale) if start is not None else None


_DAYS_PER_UNIT = {"d": 1, "day": 1, "days": 1, "wk": 7, "week": 7, "weeks": 7, "mo": 30}
"""Days in a duration unit (UCUM code or its usual text), for a prescription's supply."""


def _supply_days(request: MedicationRequest) -> float | None:
    """How long a prescription lasts: the expected supply of one fill times the fills allowed
    (None: not stated, or in a unit that is not a duration)."""
    dispense = request.dispenseRequest
    supply = dispense.expectedSupplyDuration if dispense else None
    if dispense is None or supply is None or supply.value is None:
        return None
    per_unit = _DAYS_PER_UNIT.get((supply.code or supply.unit or "").lower())
    fills = 1 + (dispense.numberOfRepeatsAllowed or 0)
    return supply.value * per_unit * fills if per_unit else None


def _add_medications(
    facts: FactSet,
    knowledge: Knowledge,
    record: PatientRecord,
    today: date,
    episode: date | None,
) -> None:
    """One fact per medicine concept: weeks since first taken, span of use, `current`, and the
    course within the back-pain episode (from the episode's start or the first use after it,
    to the last use or today while current).

    A medicine counts as current when a statement is active, a request is active and not stale
    (renewed within `active_order_max_days`; a stale one still counts for a medicine that feeds
    a red flag, `_counted`), or the last one is within `current_medication_days`. Codes are
    matched first; an entry whose codes match no medicine of a value set is matched by name in
    its text (an ingredient, or a brand of the set's branded products), and says so.
    """
    thresholds = knowledge.config.thresholds
    by_concept: dict[str, list[tuple[Evidence, _Exposure]]] = defaultdict(list)
    for entry in record.medications:
        medication = entry.resource
        exposure = _exposure(medication, today, thresholds["active_order_max_days"])
        if exposure is None:
            continue
        code = record.medicine(medication)
        text = _medication_text(code, medication.medicationReference)
        coded = [
            (concept, coding)
            for concept, coding in _matches(knowledge, code, "medication")
            if not _other_form(knowledge, concept, text)
        ]
        for concept, coding in coded:
            evidence = _evidence(knowledge, entry, concept, coding, exposure.start)
            by_concept[concept].append((evidence, _counted(knowledge, concept, exposure)))
        by_code = {concept for concept, _ in coded}
        for concept, name in knowledge.medicines_named(text) if text else ():
            if concept in by_code or _other_form(knowledge, concept, text):
                continue
            shown = f"{text} (matched by the name '{name}', not by code)"
            evidence = Evidence(
                entry.resource.resourceType, entry.reference, shown, "", "", exposure.start
            )
            by_concept[concept].append((evidence, _counted(knowledge, concept, exposure)))
    for concept, taken in by_concept.items():
        first = min(exposure.start for _, exposure in taken)
        current_now = any(exposure.current for _, exposure in taken)
        last = today if current_now else max(exposure.end for _, exposure in taken)
        current = current_now or (today - last).days <= thresholds["current_medication_days"]
        fact = MedicationFact(
            id=facts.next_id(),
            type="medication",
            concept=concept,
            weeks=round((today - first).days / 7, 2),
            span_weeks=round((last - first).days / 7, 2),
            current=current,
        )
        during = [e for _, e in taken if episode is not None and (e.current or e.end >= episode)]
        if during and episode is not None:
            began = max(episode, min(exposure.start for exposure in during))
            ended = today if current_now else max(exposure.end for exposure in during)
            fact["course_weeks"] = round(max((ended - began).days, 0) / 7, 2)
        facts.add(fact, _medicine_lines(taken, current))


def _counted(knowledge: Knowledge, concept: str, exposure: _Exposure) -> _Exposure:
    """A stale open order of a medicine that feeds a red flag (an immunosuppressant, an
    anticoagulant, a systemic corticosteroid) still counts as taken: the record says the
    patient takes it, and no card may reassure past that on the order's age alone."""
    if exposure.stale and concept in knowledge.flagging:
        return replace(exposure, current=True)
    return exposure


def _other_form(knowledge: Knowledge, concept: str, text: str) -> bool:
    """The medicine's text names a form its concept leaves out (a topical immunosuppressant)."""
    pattern = knowledge.form_patterns.get(concept)
    return bool(text and pattern and pattern.search(text))


def _medicine_lines(taken: list[tuple[Evidence, _Exposure]], current: bool) -> list[Evidence]:
    """One evidence line per medicine (code or text): how many entries, from when to when.

    Years of repeat prescriptions would otherwise fill a card with one line each; the line
    points at the latest entry.
    """
    by_medicine: dict[tuple[str, str, str], list[tuple[Evidence, _Exposure]]] = defaultdict(list)
    for evidence, exposure in taken:
        by_medicine[(evidence.system, evidence.code, evidence.display)].append((evidence, exposure))
    lines = []
    for entries in by_medicine.values():
        latest, _ = max(entries, key=lambda item: item[1].end)
        start = min(exposure.start for _, exposure in entries)
        end = max(exposure.end for _, exposure in entries)
        span = f"{start.isoformat()} to {end.isoformat()}" if end > start else start.isoformat()
        count = f"{len(entries)} record{'s' if len(entries) > 1 else ''}"
        shown = f"{count}, {span}{', current' if current else ''}"
        opened = [exposure.start for _, exposure in entries if exposure.stale and exposure.current]
        if opened and not any(exposure.current and not exposure.stale for _, exposure in entries):
            shown += (
                f" (an order still open, last written {max(opened).isoformat()} and not renewed"
                " since: counted as taken; check whether it still is)"
            )
        lines.append(latest._replace(when=None, value=shown))
    return lines


def _medication_text(code: CodeableConcept | None, reference: Reference | None) -> str:
    """The names a medicine entry gives its drug: the code's text and displays, the
    reference's display."""
    parts = [code.text if code else None, *(c.display for c in (code.coding if code else ()))]
    parts.append(reference.display if reference else None)
    return "; ".join(dict.fromkeys(part for part in parts if part))


def _add_orders(facts: FactSet, knowledge: Knowledge, record: PatientRecord) -> None:
    """One fact per order concept of the orders the hook judges (`judged_orders`)."""
    by_concept: dict[str, list[Evidence]] = defaultdict(list)
    for entry in record.judged_orders:
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
        facts.add(OrderFact(id=facts.next_id(), type="order", concept=concept), evidence)


def _referred(knowledge: Knowledge, record: PatientRecord) -> dict[str, list[Referred]]:
    """Per specialty, the draft orders and open referrals that already send the patient there:
    by performerType (the specialty's NUCC code or its family), or by the SNOMED referral code."""
    snomed, nucc = knowledge.system_uri("snomed"), knowledge.system_uri("nucc")
    referred: dict[str, list[Referred]] = defaultdict(list)
    requests = [
        *((entry, True) for entry in record.draft_orders),
        *((r, False) for r in record.referrals if r.resource.status in _REFERRAL_OPEN),
    ]
    for entry, draft in requests:
        codings = [
            *(entry.resource.code.coding if entry.resource.code else ()),
            *(entry.resource.performerType.coding if entry.resource.performerType else ()),
        ]
        performers = [c.code for c in codings if c.system == nucc]
        procedures = {c.code for c in codings if c.system == snomed}
        for key, specialty in knowledge.specialties.items():
            by_performer = any(specialty.is_performer(code) for code in performers)
            by_code = specialty.referral is not None and specialty.referral.code in procedures
            if by_performer or by_code:
                referred[key].append(Referred(entry.reference, entry.resource.priority, draft))
    return dict(referred)
