"""Errors as FHIR OperationOutcomes, with the path of what was wrong."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel
from starlette.responses import JSONResponse

# OperationOutcome.issue.code (http://hl7.org/fhir/issue-type) by HTTP status.
_ISSUE_CODES = {
    400: "invalid",
    401: "login",
    404: "not-found",
    405: "not-supported",
    408: "timeout",
    412: "incomplete",
    413: "too-costly",
    415: "not-supported",
    500: "exception",
    503: "transient",
}


class Issue:
    """One OperationOutcome issue: what is wrong, and where (a FHIRPath-like expression)."""

    __slots__ = ("expression", "message")

    def __init__(self, message: str, expression: str | None = None) -> None:
        self.message = message
        self.expression = expression


class Unavailable(Exception):
    """The database cannot be reached or written: a 503 the client may retry."""


class CDSError(Exception):
    """A request the service cannot answer with cards; rendered as an OperationOutcome."""

    def __init__(self, status: int, issues: Sequence[Issue]) -> None:
        super().__init__("; ".join(describe(issue) for issue in issues))
        self.status = status
        self.issues = issues

    @classmethod
    def of(cls, status: int, message: str, expression: str | None = None) -> "CDSError":
        return cls(status, [Issue(message, expression)])


def describe(issue: Issue) -> str:
    return f"{issue.expression}: {issue.message}" if issue.expression else issue.message


class OutcomeIssue(BaseModel):
    severity: Literal["fatal", "error", "warning", "information"]
    code: str
    diagnostics: str | None = None
    expression: list[str] | None = None


class OperationOutcome(BaseModel):
    """The FHIR R4 OperationOutcome every error answers with."""

    resourceType: Literal["OperationOutcome"] = "OperationOutcome"
    issue: list[OutcomeIssue]


def outcome_response(
    status: int, issues: Iterable[Issue], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The HTTP answer for an error: its OperationOutcome, at `status`."""
    return JSONResponse(operation_outcome(status, issues), status_code=status, headers=headers)


def operation_outcome(status: int, issues: Iterable[Issue]) -> dict[str, Any]:
    code = _ISSUE_CODES.get(status, "processing")
    outcome = OperationOutcome(
        issue=[
            OutcomeIssue(
                severity="error",
                code=code,
                diagnostics=_encodable(issue.message),
                expression=[_encodable(issue.expression)] if issue.expression else None,
            )
            for issue in issues
        ]
    )
    return outcome.model_dump(exclude_none=True)


def _encodable(text: str) -> str:
    """`text` with what UTF-8 cannot carry (lone surrogates echoed from input) as `?`."""
    return text.encode("utf-8", "replace").decode("utf-8")


def format_path(prefix: str, loc: Iterable[int | str]) -> str:
    """`('entry', 3, 'resource', 'Condition', 'clinicalStatus')` -> `prefix.entry[3]...`.

    Upper-case segments are pydantic's union tags (resource types), not FHIR element names.
    """
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "other" or part[:1].isupper():
            continue
        else:
            path += f".{part}" if path else part
    return path


def validation_issues(errors: Iterable[Mapping[str, Any]], prefix: str = "") -> list[Issue]:
    """One issue per pydantic error (`ValidationError.errors()`, or FastAPI's request errors
    with their leading `body`/`header` dropped), at its path under `prefix`."""
    return [_validation_issue(error, prefix) for error in errors]


def _validation_issue(error: Mapping[str, Any], prefix: str) -> Issue:
    if error["type"] == "json_invalid":
        return Issue(f"malformed JSON: {error.get('ctx', {}).get('error', error['msg'])}")
    return Issue(error["msg"], format_path(prefix, error["loc"]) or None)
