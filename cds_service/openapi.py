"""The OpenAPI document: FastAPI's, post-processed to state what the service really checks.

FastAPI sees `POST /cds-services/{service_id}` take a `HookRequest` whose context and prefetch are
free-form objects: the hook's context model and the FHIR models are applied later, per hook. The
document states them anyway, derived from the hook registry (an added hook appears by itself):
one request schema per hook (`PatientViewRequest`, ...) with its context model and the shape of
each prefetch key its templates name, as the slim FHIR models (`fhir_model.py`) validate it.
What JSON Schema cannot say is in the operation's description (`INEXPRESSIBLE`).
"""

import copy
import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from cds_service.fhir_model import _DATE_TIME, PrefetchValue, parse_fhir_date
from cds_service.hooks import HOOKS, HookRegistry
from cds_service.queries import Queries
from cds_service.relevance import _CODED as CODED
from cds_service.relevance import _MEDICINES as MEDICINES

SCHEMAS = "#/components/schemas/"
FHIR = "Fhir"
"""Prefix of the slim FHIR models' components (`FhirPatient`, ...): apart from the response
models (`Coding`) and the error (`OperationOutcome`) of the same name."""
UNREAD_OUTCOME = FHIR + "PrefetchOutcome"
FHIR_DATE = "^" + re.sub(r"\?P<\w+>", "", _DATE_TIME.pattern) + "$"
"""A FHIR date, dateTime or instant, as `parse_fhir_date` reads it (named groups dropped: JSON
Schema patterns are ECMA-262)."""

INVALID = {
    "description": "Invalid parameters or body; the issue names the path",
    "content": {"application/json": {"schema": {"$ref": SCHEMAS + "OperationOutcome"}}},
}
"""The answer to what FastAPI would have answered 422 (the app's handler makes it a 400)."""

INEXPRESSIBLE = """

**Checked, but not stated by the request schemas** (a request that fits them is still refused):

- 400 when the body's `hook` is not the path's service id (JSON Schema cannot tie a body member \
to a path parameter; each `{service_id}` accepts only its own request schema).
- 400 when a prefetch or draftOrders resource is about another patient than \
`context.patientId`: a `Patient` with another `id`, a `subject` naming another `Patient/{id}`.
- 400 for a FHIR date or dateTime that fits the pattern but names no calendar day (`2025-02-30`, \
year `0000`, or an offset that moves an instant past year 1 or 9999).
- 412 when a required prefetch key (%s) is absent or an OperationOutcome and the service may \
not fetch it from the `fhirServer` (the caller's issuer allows none, or none is sent): a matter of \
the deployment's trust, not of the request's shape.
- 400 for a `fhirServer` that is no URL with a host and a valid port once parsed as browsers \
do (WHATWG URL), even though it fits `format: uri` and the http(s) scheme.
- 413 when the prefetch Bundles and draftOrders together hold more entries than the service \
evaluates at once (`CDS_MAX_RECORD_ENTRIES`).
- 400 for an invalid Condition, Observation, Procedure or medicine whose code (or medicine name) \
is in the rule set's value sets: such a resource is read, and validated as its `Fhir...` schema \
says. One whose codes name nothing in them is skipped unread, unvalidated: its schema \
(`Fhir...Unread`) states only that its codes are well-formed, not which codes are in the value \
sets (they come with the rule set, not with this document).
"""

FEEDBACK_INEXPRESSIBLE = """

The request schema states the outcome rules (accepted: its acceptedSuggestions and no \
overrideReason; overridden: no acceptedSuggestions; an overrideReason is never `{}`). **Checked, \
but not stated by it**:

- 400 for a `card` this service did not issue (or issued silently): a matter of its store.
- 400 for an `outcomeTimestamp` whose UTC instant falls outside years 1-9999 \
(`0001-01-01T00:00:00+05:00`).
"""


def openapi_document(app: FastAPI, queries: Queries, hooks: HookRegistry = HOOKS) -> dict[str, Any]:
    """The app's OpenAPI: validation errors are 400s (no 422), the service ids are the
    registry's hooks, and each hook's request states its context and the prefetch `queries`
    reads."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        for path in document["paths"].values():
            for operation in path.values():
                if operation["responses"].pop("422", None) is not None:
                    operation["responses"].setdefault("400", INVALID)
                for parameter in operation.get("parameters", []):
                    if parameter["name"] == "service_id":
                        parameter["schema"]["enum"] = list(hooks)
        schemas = document["components"]["schemas"]
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        # The JSON parser reads an integer of up to 64 bits (signed or not) as an int, a larger
        # one as a float that is no valid int. Set here: FastAPI would write these as floats.
        expires_in = schemas["FhirAuthorization"]["properties"]["expires_in"]
        expires_in.update(minimum=-(2**63), maximum=2**64 - 1)
        _state_hook_requests(document, hooks, queries)
        app.openapi_schema = document
    return app.openapi_schema


def _state_hook_requests(document: dict[str, Any], hooks: HookRegistry, queries: Queries) -> None:
    """`POST /cds-services/{service_id}` takes one of the hooks' request schemas."""
    schemas: dict[str, Any] = document["components"]["schemas"]
    generic = schemas.pop("HookRequest")
    # `format: uri` allows any scheme; the service takes http(s) only (case-insensitive).
    generic["properties"]["fhirServer"]["anyOf"][0]["pattern"] = "^[Hh][Tt][Tt][Pp][Ss]?:"
    schemas.update(_fhir_schemas())
    _unread_outcome(schemas)
    requests: dict[str, str] = {}
    for hook in hooks.values():
        name = _camel(hook.id)
        context = hook.context.model_json_schema(
            ref_template=SCHEMAS + "{model}", schema_generator=_FhirJsonSchema
        )
        schemas.update(context.pop("$defs", {}))
        if "draftOrders" in context.get("properties", {}):
            context["properties"]["draftOrders"] = {
                "$ref": SCHEMAS + FHIR + "Bundle",
                "description": "The orders in question, as a Bundle (any resource types; "
                "the ServiceRequests are checked).",
            }
        schemas[context["title"]] = context
        request = copy.deepcopy(generic)
        request["title"] = f"{name}Request"
        request["description"] = f"A `{hook.id}` call: {hook.description}"
        request["properties"]["hook"] = {"type": "string", "const": hook.id, "title": "Hook"}
        request["properties"]["context"] = {"$ref": SCHEMAS + context["title"]}
        request["properties"]["prefetch"] = {
            "anyOf": [_prefetch(queries, schemas), {"type": "null"}],
            "title": "Prefetch",
        }
        schemas[request["title"]] = request
        requests[hook.id] = SCHEMAS + request["title"]

    operation = document["paths"]["/cds-services/{service_id}"]["post"]
    operation["requestBody"]["content"]["application/json"]["schema"] = {
        "oneOf": [{"$ref": ref} for ref in requests.values()],
        "discriminator": {"propertyName": "hook", "mapping": requests},
    }
    operation["description"] += INEXPRESSIBLE % ", ".join(
        f"`{key}`" for key in sorted(queries.required)
    )
    feedback = document["paths"]["/cds-services/{service_id}/feedback"]["post"]
    feedback["description"] += FEEDBACK_INEXPRESSIBLE


def _prefetch(queries: Queries, schemas: dict[str, Any]) -> dict[str, Any]:
    """The prefetch object: each key the service reads holds null (no data), an
    OperationOutcome (the client could not get it) or the resource type its template asks for."""
    properties: dict[str, Any] = {}
    for key, template in queries.readable.items():
        kind = template.split("?")[0].split("/")[0]
        shapes: list[dict[str, Any]] = [{"type": "null"}, {"$ref": SCHEMAS + UNREAD_OUTCOME}]
        if kind == "Patient":
            shapes.append(_ref("Patient"))
        shapes.append({"$ref": SCHEMAS + _search_bundle(kind, schemas)})
        required = " (required)" if key in queries.required else ""
        asked = "" if key in queries.templates else " (not asked for; read when sent)"
        properties[key] = {
            "anyOf": shapes,
            "description": f"`{template}`{required}{asked}: null when the client has no data "
            "for it",
        }
    return {"type": "object", "properties": properties, "additionalProperties": True}


def _unread_outcome(schemas: dict[str, Any]) -> None:
    schemas[UNREAD_OUTCOME] = {
        "title": "OperationOutcome (prefetch)",
        "description": "The client could not get this key's data: treated as absent (fetched "
        "when the service may), not read further.",
        "type": "object",
        "required": ["resourceType"],
        "properties": {"resourceType": {"type": "string", "const": "OperationOutcome"}},
    }


def _search_bundle(kind: str, schemas: dict[str, Any]) -> str:
    """A Bundle answering a search for `kind`: its matched entries are `kind` (or an
    OperationOutcome, skipped); `_include`d entries may be any resource. A `kind` the rules read
    by its codes may also be one they skip unread (`_unread`)."""
    name = f"{FHIR}{kind}Bundle"
    if name in schemas:
        return name
    known = FHIR + kind in schemas and kind not in ("Bundle", "OtherResource", "Resource")
    shapes: list[dict[str, Any]] = [
        _ref(kind)
        if known
        else {"allOf": [_ref("OtherResource")], "properties": {"resourceType": {"const": kind}}}
    ]
    unread = _unread(kind, schemas)
    if unread is not None:
        shapes.append({"$ref": SCHEMAS + unread})
    generic = schemas[FHIR + "BundleEntry"]["properties"]
    schemas[name] = {
        "title": f"Bundle of {kind}",
        "allOf": [_ref("Bundle")],
        "properties": {
            "entry": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"fullUrl": generic["fullUrl"], "search": generic["search"]},
                    "anyOf": [
                        {
                            "title": "Matched",
                            "properties": {
                                "resource": {
                                    "anyOf": [*shapes, _ref("OperationOutcome"), {"type": "null"}]
                                }
                            },
                        },
                        {
                            "title": "Included",
                            "required": ["search"],
                            "properties": {
                                "search": {
                                    "type": "object",
                                    "required": ["mode"],
                                    "properties": {"mode": {"const": "include"}},
                                },
                                "resource": {"anyOf": [generic["resource"], *shapes[1:]]},
                            },
                        },
                    ],
                },
            }
        },
    }
    return name


_SCALAR = {"type": ["string", "number", "boolean", "null"]}


def _unread(kind: str, schemas: dict[str, Any]) -> str | None:
    """For a type the rules read by its codes (`relevance.py`): the resource they skip unread,
    so unvalidated. JSON Schema cannot name the value sets, so this says only what makes a code
    well-formed enough to look up; which codes are in the value sets is not stated."""
    if kind in CODED:
        concept = "code"
    elif kind in MEDICINES:
        concept = "medicationCodeableConcept"
    else:
        return None
    name = f"{FHIR}{kind}Unread"
    schemas[name] = {
        "title": f"{kind} (not read)",
        "description": f"A {kind} whose `{concept}` names no concept in the rule set's value "
        "sets (and, for a medicine, whose texts name none of its ingredients): skipped before "
        "validation, so its other elements are not checked.",
        "type": "object",
        "required": ["resourceType"],
        "properties": {
            "resourceType": {"type": "string", "const": kind},
            concept: {
                "anyOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "properties": {
                            "coding": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {"system": _SCALAR, "code": _SCALAR},
                                },
                            }
                        },
                    },
                ]
            },
        },
    }
    return name


def _fhir_schemas() -> dict[str, Any]:
    """The slim FHIR models' schemas, as `FhirPatient`, `FhirBundle`, ... components."""
    adapter: TypeAdapter[Any] = TypeAdapter(PrefetchValue)
    generated = adapter.json_schema(
        ref_template=SCHEMAS + FHIR + "{model}", schema_generator=_FhirJsonSchema
    )
    schemas = {FHIR + name: schema for name, schema in generated["$defs"].items()}
    # An entry's resource is one of the known types, or "other": any type but those.
    entry = schemas[FHIR + "BundleEntry"]["properties"]["resource"]["anyOf"][0]["oneOf"]
    known = [ref["$ref"].removeprefix(SCHEMAS + FHIR) for ref in entry]
    known.remove("OtherResource")
    schemas[FHIR + "OtherResource"]["properties"]["resourceType"]["not"] = {"enum": known}
    return schemas


def _ref(model: str) -> dict[str, str]:
    return {"$ref": SCHEMAS + FHIR + model}


def _camel(hook_id: str) -> str:
    """`patient-view` -> `PatientView`."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", hook_id))


class _FhirJsonSchema(GenerateJsonSchema):
    """Pydantic's JSON Schema, with FHIR dates as the strings `parse_fhir_date` reads (pydantic
    would say `format: date`, which a partial date or a dateTime does not fit)."""

    def function_before_schema(
        self, schema: core_schema.BeforeValidatorFunctionSchema
    ) -> JsonSchemaValue:
        if schema["function"]["function"] is parse_fhir_date:
            return {"type": "string", "pattern": FHIR_DATE}
        return super().function_before_schema(schema)
