"""Prefetch: the patient's record, read and checked from the request's prefetch and context."""

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any, Generic, NamedTuple, TypeVar

from pydantic import TypeAdapter, ValidationError

from cds_service.errors import CDSError, Issue, validation_issues
from cds_service.fhir_model import (
    Bundle,
    CodeableConcept,
    Condition,
    Medication,
    MedicationRequest,
    MedicationStatement,
    Observation,
    ObservationComponent,
    OperationOutcome,
    Patient,
    PrefetchValue,
    Procedure,
    Reference,
    Resource,
    ServiceRequest,
)
from cds_service.models import HookRequest, OrderSelectContext, PatientViewContext
from cds_service.queries import Queries
from cds_service.relevance import Reader

_prefetch_value: TypeAdapter[Any] = TypeAdapter(PrefetchValue)
Positions = list[int] | None
"""Where a Bundle's kept entries were in the Bundle as sent (None: every entry kept)."""
R = TypeVar("R", bound=Resource)
C = TypeVar("C", bound=PatientViewContext)


class Entry(NamedTuple, Generic[R]):
    """A resource of the record and the reference that points at it (for reasonReference); a
    named tuple, built once per resource read."""

    resource: R
    reference: str | None


@dataclass
class PatientRecord:
    """Everything the triage may read about one patient at this hook."""

    patient_id: str
    patient: Patient | None = None
    conditions: list[Entry[Condition]] = field(default_factory=list)
    observations: list[Entry[Observation]] = field(default_factory=list)
    procedures: list[Entry[Procedure]] = field(default_factory=list)
    medications: list[Entry[MedicationRequest | MedicationStatement]] = field(default_factory=list)
    referrals: list[Entry[ServiceRequest]] = field(default_factory=list)
    draft_orders: list[Entry[ServiceRequest]] = field(default_factory=list)
    draft_medicines: list[Entry[MedicationRequest]] = field(default_factory=list)
    """Medicines being ordered (order-select, order-sign): their stated reasons are findings."""
    judged_orders: list[Entry[ServiceRequest]] = field(default_factory=list)
    """The draft orders the hook judges: order-select's `selections`, every one at order-sign.
    The others are context (an order already being placed, the reasons stated for it)."""
    medicines: dict[str, Medication] = field(default_factory=dict)
    """Medication resources of the record (`_include`d or sent), by reference and fullUrl."""
    partial: list[str] = field(default_factory=list)
    """Prefetch keys holding only the first page of a search (a `next` link not followed)."""

    def medicine(self, taken: MedicationRequest | MedicationStatement) -> CodeableConcept | None:
        """The code of the medicine `taken`: its own, or that of the Medication its
        `medicationReference` points at (contained, or in the record); None when unknown."""
        if taken.medicationCodeableConcept is not None:
            return taken.medicationCodeableConcept
        pointer = taken.medicationReference.reference if taken.medicationReference else None
        if pointer is None:
            return None
        if pointer.startswith("#"):
            found = (m for m in taken.contained if isinstance(m, Medication))
            medication = next((m for m in found if m.id == pointer[1:]), None)
        else:
            medication = self.medicines.get(pointer) or self.medicines.get(_relative(pointer))
        return medication.code if medication is not None else None


def read_context(request: HookRequest, model: type[C]) -> C:
    """The request's context as the hook's `model` says; 400 naming the path otherwise."""
    try:
        return model.model_validate(request.context)
    except ValidationError as exc:
        raise CDSError(400, validation_issues(exc.errors(include_url=False), "context")) from exc


def check_size(request: HookRequest, max_entries: int) -> int:
    """How many entries the prefetch Bundles and draftOrders hold; 413 when over `max_entries`:
    the evaluation-size budget, checked before any validation, so no record can hold a worker
    for seconds (docs/performance.md has the time per entry count)."""
    bundles = [*(request.prefetch or {}).values(), request.context.get("draftOrders")]
    count = sum(
        len(bundle["entry"])
        for bundle in bundles
        if isinstance(bundle, dict) and isinstance(bundle.get("entry"), list)
    )
    if count > max_entries:
        raise CDSError.of(
            413,
            f"the record holds {count} entries, over the {max_entries} this service evaluates "
            "at once (CDS_MAX_RECORD_ENTRIES); no cards were computed",
        )
    return count


def read_record(
    request: HookRequest,
    context: PatientViewContext,
    queries: Queries,
    read: Callable[[str], Reader] = lambda _: lambda _: True,
) -> PatientRecord:
    """Read the record from the request (every key `queries` can read); 400 for invalid FHIR,
    412 for required data that is missing.

    Search-Bundle entries whose resource the reader of its type (`read(type)`) declines are
    skipped before validation (see `relevance.py`): only what the rules can read is validated,
    strictly. A resource sent under two keys (a client that prefetched more than asked) is read
    once.
    """
    record = PatientRecord(patient_id=context.patientId)
    prefetch = request.prefetch or {}
    sent = queries.sent(key for key in prefetch if not absent(prefetch, key))
    missing = sorted(queries.required - sent)
    if missing:
        raise CDSError(
            412,
            [
                Issue(
                    f"prefetch `{key}` ({queries.templates[key]}) is missing or an "
                    "OperationOutcome, and could not be fetched (no fhirServer, not allowed, or "
                    "unavailable)",
                    f"prefetch.{key}",
                )
                for key in missing
            ],
        )
    seen: set[str] = set()
    for key, template in queries.readable.items():
        # Absent (an optional key the client could not fill) or null (no data): nothing to read.
        if not absent(prefetch, key) and prefetch[key] is not None:
            path, expected = f"prefetch.{key}", _template_type(template)
            kept, positions = _readable(prefetch[key], read, expected)
            value = _parse(kept, path, positions)
            _collect(record, value, path, expected, seen, positions)
            if isinstance(value, Bundle) and any(link.relation == "next" for link in value.link):
                record.partial.append(key)
    draft_orders = getattr(context, "draftOrders", None)
    if draft_orders is not None:
        selections = context.selections if isinstance(context, OrderSelectContext) else None
        _read_draft_orders(record, draft_orders, selections)
    return record


def _read_draft_orders(record: PatientRecord, value: Any, selections: list[str] | None) -> None:
    """The draft ServiceRequests and MedicationRequests, the Conditions of the same Bundle that the
    orders' `reasonReference` names (the stated indication, read as part of the record), and the
    orders to judge: those `selections` names (order-select), or all (order-sign); 400 for a
    selection not in the Bundle.
    """
    path = "context.draftOrders"
    bundle = _parse(value, path)
    if not isinstance(bundle, Bundle):
        raise CDSError.of(400, "draftOrders must be a Bundle", path)
    entries = _entries(bundle, path, record.patient_id)
    record.draft_orders = [Entry(r, ref) for r, ref, _ in entries if isinstance(r, ServiceRequest)]
    record.draft_medicines = [
        Entry(r, ref) for r, ref, _ in entries if isinstance(r, MedicationRequest)
    ]
    reasons = {
        reason.reference
        for order in record.draft_orders
        for reason in order.resource.reasonReference
        if reason.reference
    }
    record.conditions += [
        Entry(r, ref) for r, ref, _ in entries if isinstance(r, Condition) and ref in reasons
    ]
    if selections is None:
        record.judged_orders = list(record.draft_orders)
        return
    names = {id(r): {ref, full_url} - {None} for r, ref, full_url in entries}
    known = set().union(*names.values())
    for index, selection in enumerate(selections):
        if selection not in known:
            raise CDSError.of(
                400,
                f"selection {selection!r} is not an entry of draftOrders (by Type/id or fullUrl)",
                f"context.selections[{index}]",
            )
    record.judged_orders = [
        order for order in record.draft_orders if names[id(order.resource)] & set(selections)
    ]


def _readable(value: Any, read: Callable[[str], Reader], expected: str) -> tuple[Any, Positions]:
    """A search Bundle with only the entries the reader of `expected` keeps (`read(expected)`),
    and their positions in the Bundle as sent (for the paths of errors); None when every entry
    is kept.

    A resource of another type than the prefetch template's is kept, for its 400.
    """
    entries = value.get("entry") if isinstance(value, dict) else None
    if not isinstance(entries, list):
        return value, None
    keep = read(expected)
    positions = [
        i
        for i, entry in enumerate(entries)
        if type(entry) is not dict
        or type(resource := entry.get("resource")) is not dict
        or resource.get("resourceType") != expected
        or keep(resource)
    ]
    if len(positions) == len(entries):
        return value, None
    return {**value, "entry": [entries[i] for i in positions]}, positions


def absent(prefetch: dict[str, Any], key: str) -> bool:
    """The client did not send `key`, or sent an OperationOutcome (it could not get the data).

    A key sent as `null` is present: CDS Hooks 2.0.1 says the client has no data for it.
    """
    value = prefetch.get(key)
    return key not in prefetch or (
        isinstance(value, dict) and value.get("resourceType") == "OperationOutcome"
    )


def _parse(value: Any, path: str, positions: Positions = None) -> Resource:
    """`value` validated; 400 naming the path of each error (an entry by its sent position)."""
    try:
        parsed: Resource = _prefetch_value.validate_python(value)
    except ValidationError as exc:
        errors = [
            {**error, "loc": _sent_location(error["loc"], positions)}
            for error in exc.errors(include_url=False)
        ]
        raise CDSError(400, validation_issues(errors, path)) from exc
    return parsed


def _sent_location(loc: tuple[int | str, ...], positions: Positions) -> tuple[int | str, ...]:
    """An error's location in a Bundle of kept entries, as a location in the Bundle as sent."""
    head = 1 if loc[:1] == ("Bundle",) else 0  # the union's tag
    index = loc[head + 1] if len(loc) > head + 1 and loc[head] == "entry" else None
    if positions is None or not isinstance(index, int):
        return loc
    return (*loc[: head + 1], positions[index], *loc[head + 2 :])


def _template_type(template: str) -> str:
    """`Condition?patient=...` -> `Condition`: what a prefetch key must hold."""
    return template.split("?")[0].split("/")[0]


def _collect(
    record: PatientRecord,
    value: Resource,
    path: str,
    expected: str,
    seen: set[str],
    positions: Positions = None,
) -> None:
    """Add the resources of `value` to `record`; those `seen` under another key are skipped."""
    if isinstance(value, Patient) and expected == "Patient":
        _set_patient(record, value, path)
        return
    if not isinstance(value, Bundle):
        raise CDSError.of(
            400,
            f"expected a Bundle of {expected}, got {value.resourceType}",
            f"{path}.resourceType",
        )
    entries = _entries(value, path, record.patient_id, expected, positions)
    lists: dict[type[Resource], list[Any]] = {
        Condition: record.conditions,
        Observation: record.observations,
        Procedure: record.procedures,
        MedicationRequest: record.medications,
        MedicationStatement: record.medications,
        ServiceRequest: record.referrals,
    }
    for resource, reference, full_url in entries:
        if reference is not None:
            if reference in seen:
                continue
            seen.add(reference)
        kept = lists.get(type(resource))
        if isinstance(resource, Observation) and resource.component:
            record.observations += [Entry(r, reference) for r in components(resource)]
        if kept is not None:
            kept.append(Entry(resource, reference))
        elif isinstance(resource, Medication):
            for key in {reference, full_url} - {None}:
                record.medicines[str(key)] = resource
        elif isinstance(resource, Patient):
            _set_patient(record, resource, path)


def components(panel: Observation) -> list[Observation]:
    """A panel's components as Observations of their own: FHIR R4 says a component shares the
    panel's subject, time and status (`Observation.component`), so a temperature inside a
    vital-signs panel is a temperature. The panel stays an entry too; the card names it."""
    return [
        replace(panel, component=[], **{f.name: getattr(part, f.name) for f in _COMPONENT})
        for part in panel.component
    ]


_COMPONENT = fields(ObservationComponent)
"""The elements a component and an Observation share, as `ObservationComponent` lists them."""


def _set_patient(record: PatientRecord, patient: Patient, path: str) -> None:
    if patient.id is not None and patient.id != record.patient_id:
        raise CDSError.of(400, f"Patient/{patient.id} is not the patient in context", f"{path}.id")
    record.patient = patient


def _entries(
    bundle: Bundle,
    path: str,
    patient_id: str,
    expected: str | None = None,
    positions: Positions = None,
) -> list[tuple[Resource, str | None, str | None]]:
    """The bundle's resources with their references (type/id, else fullUrl) and fullUrls.

    400 for a resource about another patient, or (with `expected`) a matched resource of
    another type than its prefetch template asks for; `_include`d resources may be any type.
    Errors name an entry by `positions` (its place in the Bundle as sent), if given.
    """
    entries: list[tuple[Resource, str | None, str | None]] = []
    own = f"Patient/{patient_id}"  # the usual subject: no need to take it apart
    for kept, entry in enumerate(bundle.entry):
        index = positions[kept] if positions is not None else kept
        resource = entry.resource
        if resource is None or isinstance(resource, OperationOutcome):
            continue
        included = entry.search is not None and entry.search.mode == "include"
        if expected and resource.resourceType != expected and not included:
            raise CDSError.of(
                400,
                f"a {resource.resourceType} where the prefetch template asks for {expected}",
                f"{path}.entry[{index}].resource.resourceType",
            )
        subject = getattr(resource, "subject", None)
        pointer = subject.reference if isinstance(subject, Reference) else own
        if pointer != own and _other_patient(pointer, patient_id):
            raise CDSError.of(
                400,
                f"{pointer} is not the patient in context (Patient/{patient_id})",
                f"{path}.entry[{index}].resource.subject",
            )
        reference = entry_reference(resource.resourceType, resource.id, entry.fullUrl)
        entries.append((resource, reference, entry.fullUrl))
    return entries


def entry_reference(resource_type: str, id_: str | None, full_url: str | None) -> str | None:
    """How the record knows a Bundle entry: `Type/id`, else its fullUrl."""
    return f"{resource_type}/{id_}" if id_ is not None else full_url


def _relative(reference: str) -> str:
    """`http://x/fhir/Medication/7` -> `Medication/7`: an absolute reference as the relative
    one a Bundle entry is known by."""
    parts = reference.rstrip("/").split("/")
    return "/".join(parts[-2:])


def _other_patient(reference: str | None, patient_id: str) -> bool:
    """True when the reference names a Patient other than `patient_id` (urn:uuid: can't tell)."""
    if reference is None or "Patient/" not in reference:
        return False
    return reference.rsplit("Patient/", 1)[1].split("/")[0] != patient_id
