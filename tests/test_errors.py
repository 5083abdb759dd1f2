"""Errors as FHIR OperationOutcomes (`cds_service.errors`): shape, paths and messages."""

import json

import pytest
from pydantic import ValidationError

from cds_service.errors import (
    CDSError,
    Issue,
    format_path,
    operation_outcome,
    outcome_response,
    validation_issues,
)
from cds_service.fhir_model import Bundle
from tests.fhir_input import validated


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "invalid"),
        (401, "login"),
        (412, "incomplete"),
        (413, "too-costly"),
        (418, "processing"),
    ],
)
def test_the_issue_code_follows_the_http_status(status: int, code: str) -> None:
    outcome = operation_outcome(status, [Issue("wrong")])
    assert outcome["issue"][0]["code"] == code


def test_an_operation_outcome_has_one_error_issue_per_problem() -> None:
    outcome = operation_outcome(
        400, [Issue("is required", "context.patientId"), Issue("no such hook")]
    )
    assert outcome == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "invalid",
                "diagnostics": "is required",
                "expression": ["context.patientId"],
            },
            # No expression member at all when the problem has no path (FHIR forbids null).
            {"severity": "error", "code": "invalid", "diagnostics": "no such hook"},
        ],
    }


def test_the_response_carries_the_outcome_its_status_and_headers() -> None:
    response = outcome_response(401, [Issue("no token")], {"WWW-Authenticate": "Bearer"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert json.loads(bytes(response.body)) == operation_outcome(401, [Issue("no token")])


def test_cds_error_of_one_issue() -> None:
    error = CDSError.of(412, "cannot be fetched", "prefetch.patient")
    assert error.status == 412
    [issue] = error.issues
    assert (issue.message, issue.expression) == ("cannot be fetched", "prefetch.patient")
    assert str(error) == "prefetch.patient: cannot be fetched"
    assert str(CDSError.of(404, "no such service")) == "no such service"


def test_cds_error_message_joins_its_issues() -> None:
    error = CDSError(400, [Issue("bad", "a.b"), Issue("worse")])
    assert str(error) == "a.b: bad; worse"


@pytest.mark.parametrize(
    ("prefix", "loc", "path"),
    [
        ("", ("context", "patientId"), "context.patientId"),
        ("prefetch.conditions", ("entry", 3, "resource"), "prefetch.conditions.entry[3].resource"),
        # Union tags (resource types, or "other") are pydantic's, not FHIR elements.
        ("p", ("entry", 0, "resource", "Condition", "subject"), "p.entry[0].resource.subject"),
        ("p", ("entry", 1, "resource", "other", "id"), "p.entry[1].resource.id"),
        ("", (0, "code"), "[0].code"),
        ("prefix", (), "prefix"),
        ("", (), ""),
    ],
)
def test_format_path(prefix: str, loc: tuple[int | str, ...], path: str) -> None:
    assert format_path(prefix, loc) == path


def test_validation_issues_name_each_path_under_the_prefix() -> None:
    bundle = {
        "resourceType": "Bundle",
        "entry": [
            {"resource": {"resourceType": "Observation", "status": "final", "code": {}}},
            {"resource": {"resourceType": "Condition"}},
        ],
    }
    with pytest.raises(ValidationError) as error:
        validated(Bundle, bundle)
    issues = validation_issues(error.value.errors(include_url=False), "prefetch.conditions")
    assert [(issue.expression, issue.message) for issue in issues] == [
        ("prefetch.conditions.entry[1].resource.subject", "Field required")
    ]


def test_an_error_at_the_root_has_no_expression() -> None:
    [issue] = validation_issues([{"type": "missing", "loc": (), "msg": "Field required"}])
    assert issue.expression is None
    assert issue.message == "Field required"


def test_malformed_json_says_so_without_a_path() -> None:
    error = {
        "type": "json_invalid",
        "loc": ("body", 12),
        "msg": "JSON decode error",
        "ctx": {"error": "Expecting value"},
    }
    [issue] = validation_issues([error])
    assert (issue.expression, issue.message) == (None, "malformed JSON: Expecting value")
