"""Which resources of a request the rules can read: the rest is skipped before validation.

A record holds thousands of Observations and Conditions whose codes no value set lists; checking
each element of those would cost most of an evaluation and change no card. A Condition is read
when a value set other than an `irrelevant` one holds one of its codes, or when none does while
it is not over (the cards name those no rule could judge; one known to be irrelevant, or over,
can do neither); any other resource is read (and then strictly validated) when a coding of its
code (or an Observation's coded answer, or the reason of a procedure or medicine) is in a value set,
when an Observation's or a Procedure's text names a red-flag term, when a medicine's text
names an ingredient a value set lists or its drug is a reference (to a Medication, read with it),
or when it is not a coded clinical resource (Patient, ServiceRequest, Medication).
Anything malformed where the codes should be is read, so validation names the path.

As of a day, a result (an Observation with `valueQuantity`) dated before the lookback window of
every code it has is passed over too: the triage would not count it (decades of vitals cost
what their window holds, as when the service fetches them itself with `date=ge`). A day written
more than a day before the window is past it whatever its time or offset, and is passed over as
a result no value set holds would be, its date unread; one nearer the window's edge has its date
read strictly, as the triage reads it.
"""

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from cds_service.fhir_model import parse_fhir_date
from cds_service.knowledge import Knowledge

_CODED = {"Condition", "Observation", "Procedure"}
_MEDICINES = {"MedicationRequest", "MedicationStatement"}
_ENDED = {"inactive", "remission", "resolved"}
"""Clinical statuses of a Condition that is over (`facts.is_active`)."""

Reader = Callable[[dict[str, Any]], bool]
"""A predicate on a raw resource of one type (parsed JSON): True when the triage must read it."""


def readers(knowledge: Knowledge, today: date | None = None) -> Callable[[str], Reader]:
    """The reader of each resource type, as of `today` (results past their window are not
    read; None: whenever they were recorded)."""
    exact, icd10 = knowledge.codes.exact, knowledge.codes.icd10_systems
    windows = knowledge.result_windows
    shortest = knowledge.shortest_result_window
    edges: dict[int, tuple[str, str]] = {}

    def coded(concept: Any) -> bool | None:
        """True/False whether a CodeableConcept's codings hit a value set; None: malformed."""
        if concept is None:
            return False
        codings: Any = concept.get("coding", ()) if type(concept) is dict else None
        if type(codings) not in (list, tuple):
            return None
        for coding in codings:
            if type(coding) is not dict:
                return None
            system, code = coding.get("system"), coding.get("code")
            try:
                if (system, code) in exact:
                    return True
            except TypeError:  # an unhashable code
                return None
            if system in icd10 and type(code) is str and knowledge.concepts(system, code):
                return True
        return False

    def named(resource: dict[str, Any]) -> bool:
        concept = resource.get("medicationCodeableConcept")
        reference = resource.get("medicationReference")
        texts = [
            concept.get("text") if isinstance(concept, dict) else None,
            reference.get("display") if isinstance(reference, dict) else None,
        ]
        for coding in concept.get("coding", []) if isinstance(concept, dict) else []:
            texts.append(coding.get("display") if isinstance(coding, dict) else None)
        return any(isinstance(text, str) and knowledge.medicines_named(text) for text in texts)

    def worded(resource: dict[str, Any], *more: Any) -> bool:
        """The code's text or displays (or `more`) name a red-flag term: the entry is read so
        the text route can name it (checked in full, with negation, in facts.py)."""
        texts = [*words(resource.get("code")), *more]
        return any(isinstance(t, str) and knowledge.names_a_term(t) for t in texts)

    def words(concept: Any) -> list[Any]:
        """A raw CodeableConcept's text and its codings' displays (none when malformed)."""
        if not isinstance(concept, dict):
            return []
        codings = concept.get("coding")
        displays = (
            [c.get("display") for c in codings if isinstance(c, dict)]
            if isinstance(codings, list)
            else []
        )
        return [concept.get("text"), *displays]

    def judged(condition: dict[str, Any]) -> bool:
        """A Condition the triage can use: a code of a value set that is not `irrelevant`, or
        no value set's code while it is not over (the cards name it as unjudged)."""
        concept = condition.get("code", {})
        codings: Any = concept.get("coding", ()) if type(concept) is dict else None
        if type(codings) not in (list, tuple):
            return True  # malformed: read, validation names the path
        known = False
        try:
            for coding in codings:
                system, code = coding.get("system"), coding.get("code")
                found = knowledge.concepts(system, code) if type(code) is str else ()
                if any(knowledge.value_sets[c].fact != "irrelevant" for c in found):
                    return True
                known = known or bool(found)
        except (AttributeError, TypeError):  # malformed: read, validation names the path
            return True
        return not known and not ended(condition)

    def ended(condition: dict[str, Any]) -> bool:
        """A clinicalStatus that is only inactive, remission or resolved (well formed)."""
        status = condition.get("clinicalStatus")
        codings = status.get("coding") if type(status) is dict else None
        if type(codings) is not list or not codings:
            return False
        return all(type(c) is dict and c.get("code") in _ENDED for c in codings)

    def refers(resource: dict[str, Any]) -> bool:
        """A medicine given by reference: its code is in the Medication it points at."""
        reference = resource.get("medicationReference")
        return isinstance(reference, dict) and reference.get("reference") is not None

    def too_old(resource: dict[str, Any]) -> bool:
        """A result whose effectiveDateTime is before the windows of all its codes: its day as
        written more than a day before them, or, nearer, its UTC day strictly read as the triage
        reads it. A malformed date near or inside the windows is read, so validation names it;
        so is a partial one."""
        when = resource.get("effectiveDateTime")
        if today is None or type(when) is not str or when[4:5] != "-" or when[7:8] != "-":
            return False
        day = when[:10]
        if shortest is None or day >= edge(shortest)[0]:
            return False  # inside every window: its codes need not be looked at
        window = -1
        try:
            for coding in resource["code"]["coding"]:  # a list: `coded` found a hit in it
                key = (coding.get("system"), coding.get("code"))
                if key in windows:
                    days = windows[key]
                    if days is None:
                        return False  # also a finding: read whenever it was recorded
                    if days > window:
                        window = days
                elif key[0] in icd10:
                    return False  # a subtree's code: not windowed
        except (AttributeError, TypeError):  # malformed: read, validation names it
            return False
        if window < 0:
            return False
        inside, past = edge(window)
        if day >= inside:
            return False
        if day < past:
            return True  # a day before the window's first whatever the time: no date read
        try:
            return (today - parse_fhir_date(when)).days > window
        except ValueError:  # malformed: read, validation names it
            return False

    def edge(window: int) -> tuple[str, str]:
        """The days, as written (YYYY-MM-DD), from which a result is inside `window` whatever
        its time and offset, and before which it is past it whatever they are: a written day
        is within a day of its UTC day (remembered per window)."""
        found = edges.get(window)
        if found is None:
            assert today is not None
            inside = (today - timedelta(days=window - 1)).isoformat()
            found = edges[window] = (inside, (today - timedelta(days=window + 1)).isoformat())
        return found

    def observation(resource: dict[str, Any]) -> bool:
        """A finding may be its code or its coded answer; a measurement is read by its code
        only (words are read for findings, not results: "Cancer antigen 125" names no cancer
        of the patient's)."""
        parts = resource.get("component")
        if parts is not None and (type(parts) is not list or any(map(component, parts))):
            return True  # a component a rule reads (or a malformed list: validation names it)
        value = resource.get("valueCodeableConcept")
        answer = False if value is None else coded(value)
        hit = coded(resource.get("code"))
        if answer is False:
            if hit is False:
                return "valueQuantity" not in resource and worded(
                    resource, resource.get("valueString"), *words(value)
                )
            if hit is True and "valueQuantity" in resource:
                return not too_old(resource)
        return True

    def component(part: Any) -> bool:
        """A panel's component, read as an Observation of its own (a malformed one is read,
        so validation names the path)."""
        return type(part) is not dict or observation(part)

    def by_code(resource: dict[str, Any]) -> bool:
        return coded(resource.get("code")) is not False or worded(resource)

    def reasoned(resource: dict[str, Any]) -> bool:
        """A reason it was done or taken (`reasonCode`) is in a value set: a finding recorded
        on its date. A malformed list is read, so validation names the path."""
        reasons = resource.get("reasonCode", [])
        if type(reasons) is not list:
            return True
        return any(coded(reason) is not False for reason in reasons)

    def procedure(resource: dict[str, Any]) -> bool:
        return by_code(resource) or reasoned(resource)

    def medicine(resource: dict[str, Any]) -> bool:
        hit = coded(resource.get("medicationCodeableConcept"))
        return hit is not False or named(resource) or refers(resource) or reasoned(resource)

    by_type: dict[str, Reader] = dict.fromkeys(_MEDICINES, medicine)
    by_type |= dict.fromkeys(_CODED, by_code)
    by_type |= {"Condition": judged, "Observation": observation, "Procedure": procedure}
    return lambda resource_type: by_type.get(resource_type, _always)


def _always(_: dict[str, Any]) -> bool:
    """Patient, ServiceRequest, and types the triage only passes over: read."""
    return True
