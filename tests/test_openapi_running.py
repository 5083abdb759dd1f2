"""The running service keeps to its committed OpenAPI document.

schemathesis generates requests from the document (valid and invalid ones) and sends them over
HTTP to the app under uvicorn on loopback, on SQLite and on PostgreSQL, with every check on.
"""

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import sqlalchemy as sa
from schemathesis.config import ChecksConfig, SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation

from cds_service.hooks import HOOKS
from tests.conftest import ROOT, app_settings, load_example
from tests.loopback import serving

pytestmark = pytest.mark.slow  # schemathesis over HTTP, per backend

ADMIN_TOKEN = "schemathesis-admin-token"
MAX_EXAMPLES = 100
CALL = "POST /cds-services/{service_id}"
FEEDBACK = "POST /cds-services/{service_id}/feedback"
EXAMPLES_WITH_CARDS = (
    "red-flag-spinal-infection--fever-ivdu-markers",
    "neurology-radiculopathy--seven-weeks",
    "imaging-acute-without-red-flag--order-select-mri",
)

# Requests that fit the document and are still refused, by rules JSON Schema cannot state (the
# call's description lists them): per operation and status, the diagnostics that may say why.
# positive_data_acceptance is told these statuses for these two operations only, and the check
# below holds every such refusal to one of these reasons: any other refusal of valid data fails.
INEXPRESSIBLE: dict[str, dict[int, tuple[str, ...]]] = {
    CALL: {
        400: (
            r" is not the patient in context",  # Patient.id, subject: another patient
            r" is not a date that exists$",  # 2025-02-30, year 0000
            r"^Input should be a valid URL, ",  # fhirServer: a uri, http(s), but no WHATWG URL
        ),
        # Absent or OperationOutcome required keys: this service may fetch from no fhirServer.
        412: (
            r"^prefetch `[\w-]+` \(.*\) is missing or an OperationOutcome, "
            r"and could not be fetched",
            r"^fhirServer .* is not one this caller may send the service to$",
        ),
    },
    # An instant out of years 1-9999 (which `format: date-time` cannot exclude). Feedback on a
    # card the service never issued is refused too, but the test sends only issued ones.
    FEEDBACK: {400: (r"UTC instant is outside years 1-9999$",)},
}


def _config() -> SchemathesisConfig:
    operations: list[dict[str, Any]] = [
        {
            "include-name": name,
            "checks": {
                "positive_data_acceptance": {"expected-statuses": ["2xx", *map(str, statuses)]}
            },
        }
        for name, statuses in INEXPRESSIBLE.items()
    ]
    # The call's body nests every FHIR model: the coverage phase would derive ~38,000 invalid
    # variants of it (minutes). Its valid boundary cases all run; invalid bodies come from the
    # fuzzing phase, which runs both modes as everywhere else.
    operations[0]["phases"] = {"coverage": {"generation": {"mode": "positive"}}}
    # An invalid record that also lacks a required key is refused for the lack first: 412 (no
    # cards without the data) is as much a refusal as 400 is.
    operations[0]["checks"]["negative_data_rejection"] = {
        "expected-statuses": [*ChecksConfig().negative_data_rejection.expected_statuses, "412"]
    }
    # Deterministic generation: CI sends what the last local run sent (a new finding comes from
    # changing the seed on purpose, not from a red CI).
    return SchemathesisConfig.from_dict(
        {
            "seed": 20261123,
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
            "auth": {"openapi": {"HTTPBearer": {"bearer": ADMIN_TOKEN}}},
            "operations": operations,
        }
    )


ISSUED: list[str] = []
"""The uuids of the cards the running service issued (the test sends feedback on them)."""


def _issue_cards(url: str) -> list[str]:
    uuids = []
    for name in EXAMPLES_WITH_CARDS:
        request, _ = load_example(name)
        response = httpx.post(f"{url}/cds-services/{request['hook']}", json=request, timeout=30)
        uuids += [card["uuid"] for card in response.raise_for_status().json()["cards"]]
    assert uuids
    return uuids


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request: pytest.FixtureRequest) -> Iterator[str]:
    """The app (auth off, no fhirServer fetching, an admin token) under uvicorn on loopback."""
    if request.param == "sqlite":
        settings = app_settings(admin_token=ADMIN_TOKEN)
    else:
        settings = app_settings(
            admin_token=ADMIN_TOKEN, database_url=request.getfixturevalue("postgres_url")
        )
    with serving(settings) as url:
        ISSUED[:] = _issue_cards(url)
        yield url
        ISSUED.clear()
    if request.param == "postgresql":
        engine = sa.create_engine(settings.database_url)
        with engine.begin() as connection:  # a clean database for the next test
            connection.execute(
                sa.text(
                    "DROP TABLE IF EXISTS possible_misses, follow_ups, feedback, cards,"
                    " evaluations, jwt_ids, alembic_version"
                )
            )
        engine.dispose()


# The committed document (the test above holds it to the app's), sent to the running service.
schema = schemathesis.openapi.from_dict(
    json.loads((ROOT / "openapi" / "openapi.json").read_text()), config=_config()
)


def keep_described_rules(case: schemathesis.Case[Any]) -> None:
    """Valid requests kept to two rules the document can only describe, rather than allowed to
    fail on them, so that they get past them: a call goes to the service its body's hook names
    (a body member equal to a path parameter), feedback names cards the service issued (its
    store's state). Then valid feedback is stored, on each backend."""
    body: Any = case.body
    meta = case.meta
    if (
        case.operation.label == CALL
        and isinstance(body, dict)
        and body.get("hook") in HOOKS
        and not (meta and meta.is_negative_at(ParameterLocation.PATH))
    ):
        case.path_parameters = {**(case.path_parameters or {}), "service_id": body["hook"]}
    if (
        case.operation.label == FEEDBACK
        and isinstance(body, dict)
        and isinstance(body.get("feedback"), list)
        and ISSUED
        and not (meta and meta.is_negative_at(ParameterLocation.BODY))
    ):
        for item in body["feedback"]:
            if isinstance(item, dict) and isinstance(item.get("card"), str):
                item["card"] = ISSUED[sum(map(ord, item["card"])) % len(ISSUED)]


def refusals_name_an_inexpressible_rule(
    ctx: Any, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool | None:
    """A valid request refused with a status `INEXPRESSIBLE` allows: each issue says why, and
    the why is one of the rules JSON Schema cannot state."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return None
    reasons = INEXPRESSIBLE.get(case.operation.label, {}).get(response.status_code)
    if reasons is None:
        return None
    issues = response.json()["issue"]
    unexplained = [
        issue
        for issue in issues
        if not any(re.search(reason, issue.get("diagnostics", "")) for reason in reasons)
    ]
    assert issues, "a refusal names its issues"
    assert not unexplained, f"valid data refused for another reason: {unexplained}"
    return None


@pytest.mark.slow  # schemathesis: hundreds of generated requests over HTTP, per backend
@schema.parametrize()
def test_running_service_conforms_to_its_openapi(
    case: schemathesis.Case[Any], service: str
) -> None:
    keep_described_rules(case)  # in every phase (schemathesis hooks skip the coverage phase)
    # Every built-in check, positive_data_acceptance included (told only the statuses above).
    case.call_and_validate(
        base_url=service, additional_checks=[refusals_name_an_inexpressible_rule]
    )


@pytest.mark.slow
def test_admin_api_needs_its_token(service: str) -> None:
    for path in ("/admin/report", "/admin/feedback"):
        assert httpx.get(f"{service}{path}", timeout=10).status_code == 401
        wrong = {"Authorization": "Bearer not-the-token"}
        assert httpx.get(f"{service}{path}", headers=wrong, timeout=10).status_code == 401
        right = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        assert httpx.get(f"{service}{path}", headers=right, timeout=10).status_code == 200
