"""CDS Hooks 2.0 request and response models, enforcing the spec's rules on what we send.

Responses are serialised without `None` members, and every list or string that is present must be
non-empty, so no card ever carries a null or empty member (docs/architecture.md, "Contracts").
"""

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from cds_service.knowledge import Indicator

NonEmpty = Annotated[str, Field(min_length=1)]
Identifier = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]
"""A client-chosen id the store keeps (hookInstance, card uuid): bounded, no control chars."""
FhirId = Annotated[str, Field(pattern=r"^[A-Za-z0-9\-.]{1,64}$")]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- Request --------------------------------------------------------------------------------


class FhirAuthorization(BaseModel):
    model_config = ConfigDict(extra="allow")

    access_token: NonEmpty
    token_type: Literal["Bearer"]
    expires_in: int
    scope: NonEmpty
    subject: NonEmpty


class HookRequest(BaseModel):
    """The body of `POST /cds-services/{id}`; context and prefetch are read per hook later."""

    model_config = ConfigDict(extra="allow")

    hook: NonEmpty
    hookInstance: Identifier
    context: dict[str, Any]
    fhirServer: AnyHttpUrl | None = None
    fhirAuthorization: FhirAuthorization | None = None
    prefetch: dict[str, Any] | None = None


class PatientViewContext(BaseModel):
    model_config = ConfigDict(extra="allow")

    patientId: FhirId
    userId: NonEmpty | None = None
    encounterId: NonEmpty | None = None


class OrderSignContext(PatientViewContext):
    draftOrders: dict[str, Any]


class OrderSelectContext(OrderSignContext):
    selections: list[NonEmpty]


# --- Response -------------------------------------------------------------------------------


class Coding(Model):
    system: NonEmpty | None = None
    code: NonEmpty
    display: NonEmpty


class Source(Model):
    label: NonEmpty
    url: NonEmpty | None = None
    icon: NonEmpty | None = None
    topic: Coding | None = None


class Action(Model):
    type: Literal["create", "update", "delete"]
    description: NonEmpty
    resource: dict[str, Any] | None = None
    resourceId: NonEmpty | None = None

    @model_validator(mode="after")
    def _target(self) -> Self:
        if self.type in ("create", "update") and not self.resource:
            raise ValueError(f"a {self.type} action needs a resource")
        if self.type == "delete" and not self.resourceId:
            raise ValueError("a delete action needs a resourceId")
        return self


class Suggestion(Model):
    label: NonEmpty
    uuid: NonEmpty | None = None
    isRecommended: bool | None = None
    actions: Annotated[list[Action], Field(min_length=1)]


class Link(Model):
    label: NonEmpty
    url: NonEmpty
    type: Literal["absolute", "smart"]
    appContext: NonEmpty | None = None


class Card(Model):
    uuid: NonEmpty
    summary: Annotated[str, Field(min_length=1, max_length=139)]
    detail: NonEmpty
    indicator: Indicator
    source: Source
    suggestions: Annotated[list[Suggestion], Field(min_length=1)] | None = None
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: Annotated[list[Coding], Field(min_length=1)] | None = None
    links: Annotated[list[Link], Field(min_length=1)] | None = None
    extension: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _selection(self) -> Self:
        if (self.suggestions is None) != (self.selectionBehavior is None):
            raise ValueError("selectionBehavior is given exactly when there are suggestions")
        return self


class ResponseExtension(Model):
    systemActions: Annotated[list[Action], Field(min_length=1)]
    """The systemActions again, where clients written before CDS Hooks 2.0 read them: the CDS
    Hooks sandbox (its PAMA tab shows the rating only from `extension.systemActions`)."""


class CDSResponse(Model):
    cards: list[Card]
    systemActions: Annotated[list[Action], Field(min_length=1)] | None = None
    """Actions the client may apply without showing them (CDS Hooks 2.0.1): the rating of each
    judged order a card rates (`ratings.py`)."""
    extension: ResponseExtension | None = None


# --- Discovery ------------------------------------------------------------------------------


class ServiceDescriptor(Model):
    id: NonEmpty
    hook: NonEmpty
    title: NonEmpty
    description: NonEmpty
    prefetch: dict[str, str]
    usageRequirements: NonEmpty | None = None
    version: NonEmpty | None = None
    """The CDS Hooks specification version the service implements (3.0 ballot: RECOMMENDED)."""
    extension: dict[str, Any] | None = None


class Discovery(Model):
    services: list[ServiceDescriptor]


# --- Feedback -------------------------------------------------------------------------------


class ReasonCoding(BaseModel):
    model_config = ConfigDict(extra="ignore")

    system: NonEmpty | None = None
    code: NonEmpty
    display: NonEmpty | None = None


class OverrideReason(BaseModel):
    """Why a card was overridden: a `reason` Coding, a `userComment`, or both; never `{}`."""

    # The schema states `_not_empty` (the validator is what enforces it).
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "anyOf": [
                {"required": ["reason"], "properties": {"reason": {"type": "object"}}},
                {"required": ["userComment"], "properties": {"userComment": {"type": "string"}}},
            ]
        },
    )

    reason: ReasonCoding | None = None
    userComment: NonEmpty | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.reason is None and self.userComment is None:
            raise ValueError("an overrideReason needs a reason, a userComment or both (not {})")
        return self


class AcceptedSuggestion(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: NonEmpty


def _in_utc(moment: datetime) -> datetime:
    """The instant in UTC; one whose UTC date falls outside years 1-9999 is invalid."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("the timestamp's UTC instant is outside years 1-9999") from None


class FeedbackItem(BaseModel):
    """One card's outcome (CDS Hooks 2.0 feedback)."""

    # The schema states `_outcome_fields` (the validator is what enforces it).
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "oneOf": [
                {
                    "title": "Accepted",
                    "description": "Lists its acceptedSuggestions; no overrideReason.",
                    "required": ["acceptedSuggestions"],
                    "properties": {
                        "outcome": {"const": "accepted"},
                        "acceptedSuggestions": {"type": "array"},
                        "overrideReason": {"type": "null"},
                    },
                },
                {
                    "title": "Overridden",
                    "description": "No acceptedSuggestions; an overrideReason if any.",
                    "properties": {
                        "outcome": {"const": "overridden"},
                        "acceptedSuggestions": {"type": "null"},
                    },
                },
            ]
        },
    )

    card: Identifier
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: Annotated[list[AcceptedSuggestion], Field(min_length=1)] | None = None
    overrideReason: OverrideReason | None = None
    outcomeTimestamp: Annotated[AwareDatetime, AfterValidator(_in_utc)]

    def row(self) -> dict[str, Any]:
        """The feedback as a store row: the members CDS Hooks defines (others are dropped by
        design), the timestamp in UTC so two offsets of one instant are one instant."""
        accepted = [s.model_dump() for s in self.acceptedSuggestions or []]
        reason = self.overrideReason
        return {
            "card_uuid": self.card,
            "outcome": self.outcome,
            "outcome_timestamp": self.outcomeTimestamp,
            "accepted_suggestions": accepted or None,
            "override_reason": reason.model_dump(exclude_none=True) if reason else None,
        }

    @model_validator(mode="after")
    def _outcome_fields(self) -> Self:
        if self.outcome == "accepted" and not self.acceptedSuggestions:
            raise ValueError("an accepted outcome lists its acceptedSuggestions")
        if self.outcome == "overridden" and self.acceptedSuggestions:
            raise ValueError("an overridden outcome has no acceptedSuggestions")
        if self.outcome == "accepted" and self.overrideReason is not None:
            raise ValueError("an accepted outcome has no overrideReason")
        return self


class FeedbackRequest(BaseModel):
    feedback: Annotated[list[FeedbackItem], Field(min_length=1)]


def dump(model: BaseModel) -> dict[str, Any]:
    """The JSON form of a response model, without None members."""
    return model.model_dump(mode="json", exclude_none=True)
