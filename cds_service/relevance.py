"""Which resources of a request the rules can read: the rest is skipped before validation.

A record holds thousands of Observations and Conditions whose codes no value set lists; checking
each element of those would cost most of an evaluation and change no card. A resource is read
(and then strictly validated) when a coding of its code is in a value set, when a medicine's text
names an ingredient a value set lists, or when it is not a coded clinical resource (Patient,
ServiceRequest).
Anything malformed where the codes should be is read, so validation names the path.
"""

import re
from collections.abc import Callable
from typing import Any

from cds_service.knowledge import Knowledge

_CODED = {"Condition", "Observation", "Procedure"}
_MEDICINES = {"MedicationRequest", "MedicationStatement"}


def relevance(knowledge: Knowledge) -> Callable[[Any], bool]:
    """A predicate on a raw resource (parsed JSON): True when the triage must read it."""
    names = [name for vs in knowledge.value_sets.values() for name in vs.names]
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b", re.IGNORECASE)

    def coded(concept: Any) -> bool | None:
        """True/False whether a CodeableConcept's codings hit a value set; None: malformed."""
        if concept is None:
            return False
        codings = concept.get("coding", []) if isinstance(concept, dict) else None
        if not isinstance(codings, list):
            return None
        for coding in codings:
            if not isinstance(coding, dict):
                return None
            system, code = coding.get("system"), coding.get("code")
            if not isinstance(system, str | None) or not isinstance(code, str | None):
                return None
            if knowledge.concepts(system, code):
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
        return any(isinstance(text, str) and pattern.search(text) for text in texts)

    def read(resource: Any) -> bool:
        if not isinstance(resource, dict):
            return True
        kind = resource.get("resourceType")
        if kind in _CODED:
            return coded(resource.get("code")) is not False
        if kind in _MEDICINES:
            hit = coded(resource.get("medicationCodeableConcept"))
            return hit is not False or (bool(names) and named(resource))
        return True  # Patient, ServiceRequest, and types the triage only passes over

    return read
