"""Slim FHIR R4 input models: only the elements the triage reads, each validated.

Full `fhir.resources` validation of a 550-entry bundle costs ~60 ms (docs/architecture.md, "FHIR
input"), forty times the whole evaluation budget, so requests are read through these models
instead: every element we use is type- and format-checked (a bad one is a 400 naming its path);
elements we do not use are ignored, not stored. Outgoing resources are built to the
`fhir.resources.R4B` model and validated by the tests (see `cards.py`).
"""

import re
from collections.abc import Callable
from dataclasses import field
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Discriminator, Field, Tag
from pydantic.dataclasses import dataclass

_DATE_TIME = re.compile(
    r"(?P<y>[0-9]{4})(-(?P<m>0[1-9]|1[0-2])(-(?P<d>0[1-9]|[12][0-9]|3[01])"
    r"(T(?P<time>([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?)"
    r"(?P<tz>Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?"
)


_UTC_DAY = re.compile(
    r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]00:00))?"
)
"""The shapes most records write (a whole day, a time in UTC), each a `_DATE_TIME` whose UTC
day is the day as written: read without the general pattern's groups."""


def parse_fhir_date(value: Any) -> date:
    """Read a FHIR date, dateTime or instant as a UTC calendar date (partial dates: first day);
    a date already read (a model rebuilt from another, `prefetch.components`) is kept."""
    if type(value) is date:
        return value
    if not isinstance(value, str):
        raise ValueError("must be a FHIR date or dateTime string")
    as_written = _UTC_DAY.fullmatch(value) is not None
    match = None if as_written else _DATE_TIME.fullmatch(value)
    if not as_written and match is None:
        raise ValueError(f"{value!r} is not a valid FHIR date or dateTime")
    try:
        if match is None:  # as written: a whole day, or a time in UTC
            return date.fromisoformat(value[:10])
        if not match["time"]:
            return date(int(match["y"]), int(match["m"] or 1), 1)
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC).date()
    except (OverflowError, ValueError):  # year 0, Feb 30, a leap second, an offset past 1 or 9999
        raise ValueError(f"{value!r} is not a date that exists") from None


FhirDate = Annotated[date, BeforeValidator(parse_fhir_date)]


_IGNORED = ConfigDict(extra="ignore")
"""Members the triage does not read are ignored, not checked.

Each element is a slotted pydantic dataclass, not a BaseModel: validated in about 60% of a
model's time, and its attributes read in under a third (a model's reads go through its
`__getattr__` hook); docs/performance.md."""


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class Element:
    """A FHIR element."""


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class Coding(Element):
    system: str | None = None
    code: str | None = None
    display: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class CodeableConcept(Element):
    coding: list[Coding] = field(default_factory=list)
    text: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class Reference(Element):
    reference: str | None = None
    display: str | None = None


Finite = Annotated[float, Field(allow_inf_nan=False)]


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class Quantity(Element):
    value: Finite | None = None
    unit: str | None = None
    system: str | None = None
    code: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class Age(Quantity):
    """An age in years, as onsetAge: 0 to 150 (an age the onset date is computed from)."""

    value: Annotated[float, Field(ge=0, le=150, allow_inf_nan=False)] | None = None


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class Period(Element):
    start: FhirDate | None = None
    end: FhirDate | None = None


FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
FhirId = Annotated[str, Field(pattern=f"^{FHIR_ID.pattern}$")]
"""A FHIR id: cards echo it in references, so it is checked."""
FhirUri = Annotated[str, Field(pattern=r"^\S+$")]


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class Resource(Element):
    resourceType: str
    id: FhirId | None = None


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class Patient(Resource):
    resourceType: Literal["Patient"]
    birthDate: FhirDate | None = None
    deceasedBoolean: bool | None = None
    deceasedDateTime: FhirDate | None = None

    @property
    def deceased(self) -> bool:
        return bool(self.deceasedBoolean) or self.deceasedDateTime is not None


ConditionClinical = Literal["active", "recurrence", "relapse", "inactive", "remission", "resolved"]
ConditionVerification = Literal[
    "unconfirmed", "provisional", "differential", "confirmed", "refuted", "entered-in-error"
]


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class ClinicalStatusCoding(Element):
    system: str | None = None
    code: ConditionClinical


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class VerificationStatusCoding(Element):
    system: str | None = None
    code: ConditionVerification


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class ClinicalStatus(Element):
    coding: list[ClinicalStatusCoding] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class VerificationStatus(Element):
    coding: list[VerificationStatusCoding] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class Condition(Resource):
    resourceType: Literal["Condition"]
    clinicalStatus: ClinicalStatus | None = None
    verificationStatus: VerificationStatus | None = None
    code: CodeableConcept | None = None
    subject: Reference
    onsetDateTime: FhirDate | None = None
    onsetPeriod: Period | None = None
    onsetAge: Age | None = None
    abatementDateTime: FhirDate | None = None
    abatementPeriod: Period | None = None
    abatementAge: Quantity | None = None
    abatementString: str | None = None
    recordedDate: FhirDate | None = None
    bodySite: list[CodeableConcept] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class ObservationComponent(Element):
    """A result inside a panel (a temperature in a vital-signs panel): read as an Observation of
    its own, with the panel's status, subject and time (`prefetch.readings`)."""

    code: CodeableConcept
    valueQuantity: Quantity | None = None
    valueCodeableConcept: CodeableConcept | None = None
    valueBoolean: bool | None = None
    valueString: str | None = None
    interpretation: list[CodeableConcept] = field(default_factory=list)
    dataAbsentReason: CodeableConcept | None = None


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class Observation(Resource):
    resourceType: Literal["Observation"]
    status: Literal[
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    ]
    code: CodeableConcept
    subject: Reference | None = None
    effectiveDateTime: FhirDate | None = None
    effectivePeriod: Period | None = None
    effectiveInstant: FhirDate | None = None
    issued: FhirDate | None = None
    valueQuantity: Quantity | None = None
    valueCodeableConcept: CodeableConcept | None = None
    valueBoolean: bool | None = None
    valueString: str | None = None
    interpretation: list[CodeableConcept] = field(default_factory=list)
    dataAbsentReason: CodeableConcept | None = None
    component: list[ObservationComponent] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class Extension(Element):
    url: FhirUri


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class ServiceRequest(Resource):
    resourceType: Literal["ServiceRequest"]
    extension: list[Extension] = field(default_factory=list)
    """Checked: a rated order is sent back with its extensions (`ratings.py`)."""
    status: Literal[
        "draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"
    ]
    priority: Literal["routine", "urgent", "asap", "stat"] | None = None
    code: CodeableConcept | None = None
    performerType: CodeableConcept | None = None
    subject: Reference
    authoredOn: FhirDate | None = None
    reasonCode: list[CodeableConcept] = field(default_factory=list)
    reasonReference: list[Reference] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class Procedure(Resource):
    resourceType: Literal["Procedure"]
    status: Literal[
        "preparation",
        "in-progress",
        "not-done",
        "on-hold",
        "stopped",
        "completed",
        "entered-in-error",
        "unknown",
    ]
    code: CodeableConcept | None = None
    subject: Reference
    performedDateTime: FhirDate | None = None
    performedPeriod: Period | None = None
    reasonCode: list[CodeableConcept] = field(default_factory=list)
    """Why it was done: a finding recorded on its date (an X-ray after a fall)."""


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class Medication(Resource):
    """The medicine a `medicationReference` points at (contained, included or in the record)."""

    resourceType: Literal["Medication"]
    code: CodeableConcept | None = None


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class OtherResource(Resource):
    """Any resource type the triage does not read; kept only so bundles of mixed types parse."""


Contained = Annotated[
    Annotated[Medication, Tag("Medication")] | Annotated[OtherResource, Tag("other")],
    Discriminator(lambda value: "Medication" if _resource_type(value) == "Medication" else "other"),
]


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class DispenseRequest(Element):
    """How much was prescribed: the supply one fill lasts, and how many refills."""

    expectedSupplyDuration: Quantity | None = None
    numberOfRepeatsAllowed: Annotated[int, Field(ge=0, le=1000)] | None = None


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class MedicationRequest(Resource):
    """A prescription; `medicationReference.display` is read for the by-name fallback."""

    resourceType: Literal["MedicationRequest"]
    status: Literal[
        "active",
        "on-hold",
        "cancelled",
        "completed",
        "entered-in-error",
        "stopped",
        "draft",
        "unknown",
    ]
    medicationCodeableConcept: CodeableConcept | None = None
    medicationReference: Reference | None = None
    contained: list[Contained] = field(default_factory=list)
    subject: Reference
    authoredOn: FhirDate | None = None
    dispenseRequest: DispenseRequest | None = None
    reasonCode: list[CodeableConcept] = field(default_factory=list)
    """Why it was prescribed: a finding recorded on the day it was written."""


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class MedicationStatement(Resource):
    """A medicine the patient takes or took, as reported (dated by `effective[x]`)."""

    resourceType: Literal["MedicationStatement"]
    status: Literal[
        "active",
        "completed",
        "entered-in-error",
        "intended",
        "stopped",
        "on-hold",
        "unknown",
        "not-taken",
    ]
    medicationCodeableConcept: CodeableConcept | None = None
    medicationReference: Reference | None = None
    contained: list[Contained] = field(default_factory=list)
    subject: Reference
    effectiveDateTime: FhirDate | None = None
    effectivePeriod: Period | None = None
    dateAsserted: FhirDate | None = None
    reasonCode: list[CodeableConcept] = field(default_factory=list)
    """Why it is taken: a finding recorded from the day it started."""


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class OperationOutcome(Resource):
    resourceType: Literal["OperationOutcome"]


def _resource_type(value: Any) -> Any:
    if isinstance(value, dict):
        return value.get("resourceType")
    return getattr(value, "resourceType", None)


def _tagger(known: frozenset[str]) -> Callable[[Any], str | None]:
    """Discriminate on resourceType: a known type, "other", or None (not a resource)."""

    def tag(value: Any) -> str | None:
        kind = _resource_type(value)
        if not isinstance(kind, str):
            return None
        return kind if kind in known else "other"

    return tag


AnyResource = Annotated[
    Annotated[Patient, Tag("Patient")]
    | Annotated[Condition, Tag("Condition")]
    | Annotated[Observation, Tag("Observation")]
    | Annotated[ServiceRequest, Tag("ServiceRequest")]
    | Annotated[Procedure, Tag("Procedure")]
    | Annotated[MedicationRequest, Tag("MedicationRequest")]
    | Annotated[MedicationStatement, Tag("MedicationStatement")]
    | Annotated[Medication, Tag("Medication")]
    | Annotated[OperationOutcome, Tag("OperationOutcome")]
    | Annotated[OtherResource, Tag("other")],
    Discriminator(
        _tagger(
            frozenset(
                {
                    "Patient",
                    "Condition",
                    "Observation",
                    "ServiceRequest",
                    "Procedure",
                    "MedicationRequest",
                    "MedicationStatement",
                    "Medication",
                    "OperationOutcome",
                }
            )
        )
    ),
]


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class BundleLink(Element):
    relation: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class BundleSearch(Element):
    mode: Literal["match", "include", "outcome"] | None = None


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class BundleEntry(Element):
    fullUrl: FhirUri | None = None
    resource: AnyResource | None = None
    search: BundleSearch | None = None


@dataclass(frozen=True, slots=True, kw_only=True, config=_IGNORED)
class Bundle(Resource):
    resourceType: Literal["Bundle"]
    type: str | None = None
    link: list[BundleLink] = field(default_factory=list)
    entry: list[BundleEntry] = field(default_factory=list)


PrefetchValue = Annotated[
    Annotated[Bundle, Tag("Bundle")]
    | Annotated[Patient, Tag("Patient")]
    | Annotated[OperationOutcome, Tag("OperationOutcome")]
    | Annotated[OtherResource, Tag("other")],
    Discriminator(_tagger(frozenset({"Bundle", "Patient", "OperationOutcome"}))),
]
