"""The committed OpenAPI document is the app's, and the app keeps to it under generated input."""

import json
from typing import Any

import schemathesis
from fastapi import FastAPI

from cds_service.app import create_app
from tests.conftest import ROOT, app_settings

# Generated requests name arbitrary fhirServer hosts: fetch from none of them.
app: FastAPI = create_app(app_settings())
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


def test_committed_openapi_equals_the_apps() -> None:
    committed = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    assert committed == app.openapi(), "regenerate: cds-service openapi > openapi/openapi.json"


@schema.parametrize()
def test_api_conforms_to_its_openapi(case: schemathesis.Case[Any]) -> None:
    # A request can match the JSON schema and still carry FHIR that the triage must refuse
    # (a hook that does not match the service, a Condition of another patient): a 400 there is
    # the intended answer, so "schema-valid data must be accepted" does not apply. Every other
    # check runs: no 5xx, documented status codes, content types and response schemas.
    case.call_and_validate(excluded_checks=[schemathesis.checks.positive_data_acceptance])
