"""The FHIR queries the service asks for: its prefetch templates and its own searches.

Every template is a search shape a US Core server SHALL answer (US Core 9.0 server
CapabilityStatement): `Patient/{id}`; `Condition`, `Procedure` and `ServiceRequest` by
`patient`; `Observation` by `patient` and `category`, one key per category the rules read;
`MedicationRequest` by `patient` and `intent`, with `_include=MedicationRequest:medication` so a
`medicationReference` arrives with its Medication. The Observation keys are derived from the
value sets the rules read (each names its category), so a rule that reads a new category adds a
key, and from the categories where EHRs record findings as Observations
(`prefetch.finding_categories`: exam, social-history), searched with no date window. An
Observation key is required when one of its concepts feeds a red flag (412 when it cannot be
had); the rest are optional (skipped, and logged, when a server refuses them).

When the service searches itself it adds what a template cannot say: a date window from the
rules' lookbacks (`date=ge...`, US Core's patient+category+date) and `_count`.

A client that prefetches more than asked is read too: `observations` (every Observation of the
patient, the template of rule sets before 0.6) stands for every Observation key it covers, and
`statements` (MedicationStatement, not in US Core) is read when sent.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta

from cds_service.knowledge import Knowledge

PATIENT = "{{context.patientId}}"
OBSERVATIONS = "observations"
"""The key of every Observation at once: read when a client sends it, never asked for."""

_FIXED = {
    "patient": f"Patient/{PATIENT}",
    "conditions": f"Condition?patient={PATIENT}",
}
_OPTIONAL = {
    "procedures": f"Procedure?patient={PATIENT}",
    "referrals": f"ServiceRequest?patient={PATIENT}",
}
_EXTRA = {
    OBSERVATIONS: f"Observation?patient={PATIENT}",
    "statements": f"MedicationStatement?patient={PATIENT}",
}


@dataclass(frozen=True)
class Queries:
    """The prefetch the service asks for, what it reads, and how it searches itself."""

    templates: Mapping[str, str]
    """Prefetch key -> template, as discovery states them."""
    required: frozenset[str]
    """Keys without which no card is given (412)."""
    windows: Mapping[str, int]
    """Key -> days back the rules read (the service's own search asks `date=ge`)."""
    covered: Mapping[str, str]
    """Key -> the broader key that holds its resources when a client sends that one instead."""
    page_size: int

    @property
    def readable(self) -> dict[str, str]:
        """Every key the service reads when a client sends it: its templates and the extras."""
        return {**self.templates, **_EXTRA}

    def sent(self, present: Iterable[str]) -> set[str]:
        """The template keys that the `present` keys provide (directly or by a broader key)."""
        keys = set(present)
        return {key for key in self.templates if key in keys or self.covered.get(key) in keys}

    def search(self, key: str, patient_id: str, today: date) -> str:
        """The query the service itself sends for `key`: the template, for `patient_id`, with
        a date window where the rules read only recent results, and `_count` on searches."""
        query = self.templates[key].replace(PATIENT, patient_id)
        if "?" not in query:
            return query
        window = self.windows.get(key)
        if window is not None:
            query += f"&date=ge{(today - timedelta(days=window)).isoformat()}"
        return f"{query}&_count={self.page_size}"


def queries(knowledge: Knowledge) -> Queries:
    """The queries the rules in `knowledge` need."""
    prefetch = knowledge.config.prefetch
    categories: dict[str, set[str]] = {}
    for concept in sorted(knowledge.read):
        category = knowledge.value_sets[concept].category
        if category is not None:
            categories.setdefault(category, set()).add(concept)
    for category in prefetch.finding_categories:  # findings recorded as Observations
        categories.setdefault(category, set())
    observations = {
        f"observations-{category}": (category, concepts)
        for category, concepts in sorted(categories.items())
    }
    intents = ",".join(prefetch.medication_intents)
    templates = {
        **_FIXED,
        **{
            key: f"Observation?patient={PATIENT}&category={category}"
            for key, (category, _) in observations.items()
        },
        **_OPTIONAL,
        "medications": f"MedicationRequest?patient={PATIENT}&intent={intents}"
        "&_include=MedicationRequest:medication",
    }
    required = {key for key, (_, concepts) in observations.items() if concepts & knowledge.flagging}
    return Queries(
        templates=templates,
        required=frozenset({*_FIXED, *required}),
        windows={
            key: max(knowledge.config.lookback_days[concept] for concept in concepts)
            for key, (category, concepts) in observations.items()
            if category not in prefetch.finding_categories
        },
        covered=dict.fromkeys(observations, OBSERVATIONS),
        page_size=prefetch.page_size,
    )
