"""The committed OpenAPI document is the app's, and it states the hooks' requests and the feedback
rules (tests/test_openapi_running.py sends it to the running service with schemathesis)."""

import functools
import json
from typing import Any

import jsonschema_rs
import pytest
from pydantic import ValidationError

from cds_service.app import create_app
from cds_service.hooks import HOOKS, Hook
from cds_service.models import FeedbackRequest, PatientViewContext
from cds_service.openapi import openapi_document
from tests.conftest import ROOT, app_settings, example_names, load_example


def test_committed_openapi_equals_the_apps() -> None:
    committed = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    app = create_app(app_settings())
    assert committed == app.openapi(), "regenerate: cds-service openapi > openapi/openapi.json"


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A JSON Schema validator of `schema`, whose refs point into `document`'s components."""
    return jsonschema_rs.Draft202012Validator({**schema, "components": document["components"]})


@functools.cache
def _document() -> dict[str, Any]:
    """The app's document, built once for the tests that read it."""
    document: dict[str, Any] = create_app(app_settings()).openapi()
    return document


def _body(document: dict[str, Any], path: str) -> dict[str, Any]:
    schema: dict[str, Any] = document["paths"][path]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"]
    return schema


def test_every_example_request_fits_its_hooks_schema() -> None:
    document = _document()
    requests = _validator(document, _body(document, "/cds-services/{service_id}"))
    for name in example_names():
        request, _ = load_example(name)
        assert requests.is_valid(request), (name, [str(e) for e in requests.iter_errors(request)])


def test_a_hook_added_to_the_registry_gets_its_own_request_schema() -> None:
    discharge = Hook(
        id="encounter-discharge",
        context=PatientViewContext,
        title="Discharge",
        description="At discharge.",
    )
    hooks = HOOKS.with_hook(discharge)
    app = create_app(app_settings())
    document = openapi_document(app, app.state.wiring.service.triage.queries, hooks)
    body = _body(document, "/cds-services/{service_id}")
    assert body["discriminator"]["mapping"]["encounter-discharge"] == (
        "#/components/schemas/EncounterDischargeRequest"
    )
    assert len(body["oneOf"]) == len(hooks)
    requests = _validator(document, body)
    request: dict[str, Any] = {
        "hook": "encounter-discharge",
        "hookInstance": "d1",
        "context": {"patientId": "p1"},
        "prefetch": {
            "patient": {"resourceType": "Patient", "id": "p1"},
            "procedures": {
                "resourceType": "Bundle",
                "entry": [
                    {
                        "resource": {"resourceType": "Encounter", "id": "e1"},
                        "search": {"mode": "include"},
                    }
                ],
            },
        },
    }
    assert requests.is_valid(request)
    del request["prefetch"]["procedures"]["entry"][0]["search"]
    assert not requests.is_valid(request)  # a matched entry of another type than the template's


OUTCOME = {"card": "c1", "outcomeTimestamp": "2026-11-01T10:15:00Z"}
FEEDBACK_ITEMS: list[tuple[dict[str, Any], bool]] = [
    ({**OUTCOME, "outcome": "accepted", "acceptedSuggestions": [{"id": "s1"}]}, True),
    ({**OUTCOME, "outcome": "accepted"}, False),
    ({**OUTCOME, "outcome": "accepted", "acceptedSuggestions": []}, False),
    ({**OUTCOME, "outcome": "accepted", "acceptedSuggestions": None}, False),
    (
        {
            **OUTCOME,
            "outcome": "accepted",
            "acceptedSuggestions": [{"id": "s1"}],
            "overrideReason": {"userComment": "no"},
        },
        False,
    ),
    ({**OUTCOME, "outcome": "overridden"}, True),
    ({**OUTCOME, "outcome": "overridden", "acceptedSuggestions": None}, True),
    ({**OUTCOME, "outcome": "overridden", "acceptedSuggestions": [{"id": "s1"}]}, False),
    ({**OUTCOME, "outcome": "overridden", "overrideReason": {"userComment": "seen"}}, True),
    ({**OUTCOME, "outcome": "overridden", "overrideReason": {"reason": {"code": "x"}}}, True),
    ({**OUTCOME, "outcome": "overridden", "overrideReason": {}}, False),
    ({**OUTCOME, "outcome": "overridden", "overrideReason": {"reason": None}}, False),
    ({**OUTCOME, "outcome": "overridden", "overrideReason": {"userComment": None}}, False),
]


@pytest.mark.parametrize(("item", "valid"), FEEDBACK_ITEMS)
def test_the_feedback_schema_states_the_feedback_rules(item: dict[str, Any], valid: bool) -> None:
    document = _document()
    feedback = _validator(document, _body(document, "/cds-services/{service_id}/feedback"))
    body = {"feedback": [item]}
    assert feedback.is_valid(body) is valid
    try:  # the schema and the model agree
        FeedbackRequest.model_validate(body)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted is valid
