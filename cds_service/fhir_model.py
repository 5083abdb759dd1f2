"""Slim FHIR R4 input models: only the elements the triage reads, each validated.

Full `fhir.resources` validation of a 550-entry bundle costs ~60 ms (docs/architecture.md, "FHIR
input"), forty times the whole evaluation budget, so requests are read through these models
instead: every element we use is type- and format-checked (a bad one is a 400 naming its path);
elements we do not use are ignored, not stored. Outgoing resources are built to the
`fhir.resources.R4B` model and validated by the tests (see `cards.py`).

The models are msgspec Structs, read two ways with the same constraints: straight from a
prefetch value's JSON by msgspec (`fhir_decode.py`: one pass, no dicts), or, when msgspec refuses
the value, from parsed JSON by pydantic through the schema `Element` builds from the same fields,
whose errors name every bad element's path (`prefetch.py`). Each constraint is stated for both
(`Field` for pydantic, `Meta` for msgspec; `tests/test_fhir_model.py` checks they agree).
"""

import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, field
from pydantic import Discriminator, Field, GetCoreSchemaHandler, Tag
from pydantic_core import CoreSchema, core_schema

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


class FhirDate(date):
    """A FHIR date, dateTime or instant, as its UTC calendar day (`parse_fhir_date`): a `date`
    that pydantic reads by the schema below and msgspec through `fhir_decode.decode_hook`."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_before_validator_function(
            parse_fhir_date, core_schema.date_schema()
        )


def parse_fhir_date(value: Any) -> FhirDate:
    """Read a FHIR date, dateTime or instant as a UTC calendar date (partial dates: first day)."""
    if not isinstance(value, str):
        raise ValueError("must be a FHIR date or dateTime string")
    as_written = _UTC_DAY.fullmatch(value) is not None
    match = None if as_written else _DATE_TIME.fullmatch(value)
    if not as_written and match is None:
        raise ValueError(f"{value!r} is not a valid FHIR date or dateTime")
    try:
        if match is None:  # as written: a whole day, or a time in UTC
            return FhirDate.fromisoformat(value[:10])
        if not match["time"]:
            return FhirDate(int(match["y"]), int(match["m"] or 1), 1)
        day = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC).date()
        return FhirDate(day.year, day.month, day.day)
    except (OverflowError, ValueError):  # year 0, Feb 30, a leap second, an offset past 1 or 9999
        raise ValueError(f"{value!r} is not a date that exists") from None


class Element(msgspec.Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """A FHIR element; members the triage does not read are ignored, not checked.

    A frozen Struct (not tracked by the collector: it holds no cycles), read by msgspec from
    JSON, or validated by pydantic through `__get_pydantic_core_schema__`: a typed dict of the
    same fields and constraints, unknown keys ignored, that builds the Struct."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        fields: dict[str, core_schema.TypedDictField] = {}
        for info in msgspec.structs.fields(cls):
            schema = handler.generate_schema(info.type)
            if info.default_factory is not msgspec.NODEFAULT:
                schema = core_schema.with_default_schema(
                    schema, default_factory=info.default_factory
                )
            elif info.default is not msgspec.NODEFAULT:
                schema = core_schema.with_default_schema(schema, default=info.default)
            fields[info.name] = core_schema.typed_dict_field(schema, required=info.required)
        members = core_schema.typed_dict_schema(fields, cls=cls, extra_behavior="ignore")
        return core_schema.no_info_after_validator_function(
            lambda values: cls(**values), members, ref=f"{cls.__module__}.{cls.__qualname__}"
        )


class Coding(Element, frozen=True, kw_only=True):
    system: str | None = None
    code: str | None = None
    display: str | None = None


class CodeableConcept(Element, frozen=True, kw_only=True):
    coding: list[Coding] = field(default_factory=list)
    text: str | None = None


class Reference(Element, frozen=True, kw_only=True):
    reference: str | None = None
    display: str | None = None


Finite = Annotated[
    float, Field(allow_inf_nan=False), Meta(ge=-1.7976931348623157e308, le=1.7976931348623157e308)
]
"""A finite number (msgspec reads a too-large one, 1e999, as infinity: the bounds refuse it)."""


class Quantity(Element, frozen=True, kw_only=True):
    value: Finite | None = None
    unit: str | None = None
    system: str | None = None
    code: str | None = None


class Age(Quantity, frozen=True, kw_only=True):
    """An age in years, as onsetAge: 0 to 150 (an age the onset date is computed from)."""

    value: Annotated[float, Field(ge=0, le=150, allow_inf_nan=False), Meta(ge=0, le=150)] | None = (
        None
    )


class Period(Element, frozen=True, kw_only=True):
    start: FhirDate | None = None
    end: FhirDate | None = None


FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
FhirId = Annotated[str, Field(pattern=f"^{FHIR_ID.pattern}$"), Meta(pattern=f"^{FHIR_ID.pattern}$")]
"""A FHIR id: cards echo it in references, so it is checked."""
FhirUri = Annotated[str, Field(pattern=r"^\S+$"), Meta(pattern=r"^\S+$")]


class Resource(Element, frozen=True, kw_only=True):
    resourceType: str
    id: FhirId | None = None


class Patient(Resource, frozen=True, kw_only=True):
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


class ClinicalStatusCoding(Element, frozen=True, kw_only=True):
    system: str | None = None
    code: ConditionClinical


class VerificationStatusCoding(Element, frozen=True, kw_only=True):
    system: str | None = None
    code: ConditionVerification


class ClinicalStatus(Element, frozen=True, kw_only=True):
    coding: list[ClinicalStatusCoding] = field(default_factory=list)


class VerificationStatus(Element, frozen=True, kw_only=True):
    coding: list[VerificationStatusCoding] = field(default_factory=list)


class Condition(Resource, frozen=True, kw_only=True):
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


class Observation(Resource, frozen=True, kw_only=True):
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


class Extension(Element, frozen=True, kw_only=True):
    url: FhirUri


class ServiceRequest(Resource, frozen=True, kw_only=True):
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


class Procedure(Resource, frozen=True, kw_only=True):
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


class Medication(Resource, frozen=True, kw_only=True):
    """The medicine a `medicationReference` points at (contained, included or in the record)."""

    resourceType: Literal["Medication"]
    code: CodeableConcept | None = None


class OtherResource(Resource, frozen=True, kw_only=True):
    """Any resource type the triage does not read; kept only so bundles of mixed types parse."""


Contained = Annotated[
    Annotated[Medication, Tag("Medication")] | Annotated[OtherResource, Tag("other")],
    Discriminator(lambda value: "Medication" if _resource_type(value) == "Medication" else "other"),
]


class DispenseRequest(Element, frozen=True, kw_only=True):
    """How much was prescribed: the supply one fill lasts, and how many refills."""

    expectedSupplyDuration: Quantity | None = None
    numberOfRepeatsAllowed: Annotated[int, Field(ge=0, le=1000), Meta(ge=0, le=1000)] | None = None


class MedicationRequest(Resource, frozen=True, kw_only=True):
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


class MedicationStatement(Resource, frozen=True, kw_only=True):
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


class OperationOutcome(Resource, frozen=True, kw_only=True):
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


class BundleLink(Element, frozen=True, kw_only=True):
    relation: str | None = None
    url: str | None = None


class BundleSearch(Element, frozen=True, kw_only=True):
    mode: Literal["match", "include", "outcome"] | None = None


class BundleEntry(Element, frozen=True, kw_only=True):
    fullUrl: FhirUri | None = None
    resource: AnyResource | None = None
    search: BundleSearch | None = None


class Bundle(Resource, frozen=True, kw_only=True):
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
