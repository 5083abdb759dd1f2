"""Feedback and the evaluation audit: validated, durable, idempotent, linked to cards."""

import copy
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import anyio
import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.auth import Authenticator, IssuerTrust
from cds_service.errors import Unavailable
from cds_service.knowledge import Knowledge
from cds_service.settings import Settings
from cds_service.storage import Store
from tests.conftest import app_settings, load_example
from tests.postgres import postgres_server

EXAMPLE = "neurology-radiculopathy--seven-weeks"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def settings(request: pytest.FixtureRequest) -> Iterator[Settings]:
    """Every test here runs on SQLite (the default) and on a real PostgreSQL server."""
    if request.param == "sqlite":
        yield app_settings()
        return
    url = request.getfixturevalue("postgres_url")
    yield app_settings(database_url=url)
    engine = sa.create_engine(url)
    with engine.begin() as connection:  # a clean database for the next test
        connection.execute(
            sa.text(
                "DROP TABLE IF EXISTS possible_misses, follow_ups, feedback, cards, evaluations,"
                " jwt_ids, alembic_version"
            )
        )
    engine.dispose()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _rows(settings: Settings, table: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(settings.database_url)
    with engine.connect() as connection:
        rows = [dict(row._mapping) for row in connection.execute(sa.text(f"SELECT * FROM {table}"))]
    engine.dispose()
    return rows


def _card(client: TestClient, request: dict[str, Any] | None = None) -> dict[str, Any]:
    response = client.post("/cds-services/patient-view", json=request or load_example(EXAMPLE)[0])
    assert response.status_code == 200
    (card,) = response.json()["cards"]
    return card  # type: ignore[no-any-return]


def _accepted(card: dict[str, Any]) -> dict[str, Any]:
    return {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
                "outcomeTimestamp": "2026-11-01T10:15:00Z",
            }
        ]
    }


def test_feedback_is_stored_once_however_often_it_is_sent(
    client: TestClient, settings: Settings
) -> None:
    card = _card(client)
    for _ in range(3):
        response = client.post("/cds-services/patient-view/feedback", json=_accepted(card))
        assert response.status_code == 200, response.text
    (row,) = _rows(settings, "feedback")
    assert row["card_uuid"] == card["uuid"]
    assert row["outcome"] == "accepted"


@pytest.mark.slow  # builds its own app per test (~1 s)
def test_override_with_reason_is_stored(client: TestClient, settings: Settings) -> None:
    card = _card(client)
    body = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "overrideReason": {
                    "reason": card["overrideReasons"][0],
                    "userComment": "seen by neurology last month",
                },
                "outcomeTimestamp": "2026-11-01T10:20:00+01:00",
            }
        ]
    }
    assert client.post("/cds-services/patient-view/feedback", json=body).status_code == 200
    (row,) = _rows(settings, "feedback")
    assert row["outcome"] == "overridden"
    assert "seen by neurology" in str(row["override_reason"])


@pytest.mark.slow  # builds its own app per test (~1 s)
@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda item: item.pop("outcome"), "feedback[0].outcome"),
        (lambda item: item.pop("acceptedSuggestions"), "feedback[0]"),
        (
            lambda item: item.update(outcomeTimestamp="2026-11-01T10:15:00"),
            "feedback[0].outcomeTimestamp",
        ),
        (lambda item: item.update(outcome="ignored"), "feedback[0].outcome"),
        (lambda item: item.update(card="not-a-card-we-issued"), "feedback.card"),
        (
            lambda item: item.update(
                outcome="overridden", acceptedSuggestions=None, overrideReason={}
            ),
            "feedback[0].overrideReason",
        ),
        (
            lambda item: item.update(overrideReason={"userComment": "no"}),
            "feedback[0]",
        ),
    ],
    ids=[
        "no-outcome",
        "accepted-without-suggestions",
        "naive-timestamp",
        "bad-outcome",
        "unknown-card",
        "empty-override-reason",
        "accepted-with-override-reason",
    ],
)
def test_malformed_feedback_is_400(
    client: TestClient, settings: Settings, change: Any, path: str
) -> None:
    body = _accepted(_card(client))
    change(body["feedback"][0])
    response = client.post("/cds-services/patient-view/feedback", json=body)
    assert response.status_code == 400
    assert path in [e for issue in response.json()["issue"] for e in issue.get("expression", [])]
    assert _rows(settings, "feedback") == []


@pytest.mark.slow  # builds its own app per test (~1 s)
def test_every_evaluation_is_audited_without_tokens(
    client: TestClient, settings: Settings, knowledge: Knowledge
) -> None:
    request = copy.deepcopy(load_example(EXAMPLE)[0])
    request["fhirAuthorization"] = {
        "access_token": "very-secret-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "spine-cds",
    }
    card = _card(client, request)
    (evaluation,) = _rows(settings, "evaluations")
    assert evaluation["hook_instance"] == request["hookInstance"]
    assert evaluation["service"] == "patient-view"
    assert "neurology-radiculopathy" in str(evaluation["rules_fired"])
    assert evaluation["ruleset_version"] == knowledge.version
    assert evaluation["duration_ms"] > 0
    (issued,) = _rows(settings, "cards")
    assert issued["uuid"] == card["uuid"]
    assert issued["rule_id"] == "neurology-radiculopathy"
    content = issued["content"]  # kept whole for the review page, less the link's secret
    (link,) = card["links"]
    uuid, _, secret = link["appContext"].partition(".")
    stored_card = {**card, "links": [{**link, "appContext": uuid}]}
    assert (json.loads(content) if isinstance(content, str) else content) == stored_card
    assert secret not in str(_rows(settings, "cards"))
    audit = str(_rows(settings, "evaluations"))
    assert "very-secret-token" not in audit + str(_rows(settings, "cards"))
    assert request["context"]["patientId"] not in audit


@pytest.mark.slow  # builds its own app per test (~1 s)
def test_ready_reports_the_database(client: TestClient) -> None:
    assert client.get("/ready").json()["status"] == "ready"


@pytest.mark.slow  # starts and stops a PostgreSQL server of its own
def test_ready_is_503_when_the_database_is_gone() -> None:
    with postgres_server() as url:
        app = create_app(app_settings(database_url=url))
    with TestClient(app) as client:  # the server has stopped
        response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["issue"][0]["code"] == "transient"


@pytest.mark.slow  # builds its own app per test (~1 s)
def test_two_offsets_of_different_instants_are_two_records(
    client: TestClient, settings: Settings
) -> None:
    """10:00+01:00 and 10:00+05:00 are four hours apart: both are kept, on every backend."""
    card = _card(client)
    for stamp in ("2026-11-01T10:00:00+01:00", "2026-11-01T10:00:00+05:00"):
        body = _accepted(card)
        body["feedback"][0]["outcomeTimestamp"] = stamp
        assert client.post("/cds-services/patient-view/feedback", json=body).status_code == 200
    assert len(_rows(settings, "feedback")) == 2
    body = _accepted(card)
    body["feedback"][0]["outcomeTimestamp"] = "2026-11-01T09:00:00Z"  # the first, in UTC
    assert client.post("/cds-services/patient-view/feedback", json=body).status_code == 200
    assert len(_rows(settings, "feedback")) == 2


@pytest.mark.slow  # builds its own app per test (~1 s)
def test_members_the_spec_does_not_define_are_not_stored(
    client: TestClient, settings: Settings
) -> None:
    card = _card(client)
    body = _accepted(card)
    body["feedback"][0]["acceptedSuggestions"][0]["padding"] = "x" * 100_000
    body["feedback"][0]["extra"] = {"anything": True}
    assert client.post("/cds-services/patient-view/feedback", json=body).status_code == 200
    (row,) = _rows(settings, "feedback")
    assert "padding" not in str(row["accepted_suggestions"])
    assert len(str(row)) < 10_000


@pytest.mark.slow  # starts and stops a PostgreSQL server of its own
def test_with_postgresql_stopped_feedback_is_503_and_cards_still_go_out() -> None:
    """The documented choice: an evaluation whose audit write fails still answers its cards
    (logged, counted, /ready 503); feedback, which is the record itself, is a 503 to retry."""
    with ExitStack() as outlives_the_server:
        with postgres_server() as url:
            app = create_app(app_settings(database_url=url))
            client = outlives_the_server.enter_context(TestClient(app))
            card = _card(client)
        # the server has stopped
        evaluation = client.post("/cds-services/patient-view", json=load_example(EXAMPLE)[0])
        assert evaluation.status_code == 200
        assert evaluation.json()["cards"]
        assert "cds_audit_failures_total 1.0" in client.get("/metrics").text
        assert client.get("/ready").status_code == 503
        response = client.post("/cds-services/patient-view/feedback", json=_accepted(card))
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "30"
        assert response.json()["resourceType"] == "OperationOutcome"


def test_the_replay_check_without_a_database_is_503_not_401() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key())), "kid": "k"}
    issuers = {"https://ehr.example": IssuerTrust(jwks={"keys": [jwk]})}
    now = int(time.time())
    aud = "https://cds.example/cds-services"
    claims = {"iss": "https://ehr.example", "aud": aud, "exp": now + 60, "iat": now, "jti": "j"}
    token = jwt.encode(claims, key, algorithm="ES384", headers={"kid": "k", "typ": "JWT"})

    def unreachable(*_: Any) -> bool:
        raise Unavailable("OperationalError")

    authenticator = Authenticator(issuers, 30, unreachable, "https://cds.example")
    with pytest.raises(Unavailable):  # not the 401 of a refused token: the app answers 503
        anyio.run(authenticator.verify, f"Bearer {token}", "/cds-services")


@pytest.mark.slow  # builds its own app per test (~1 s)
def test_the_store_stays_bounded_under_retention(client: TestClient, settings: Settings) -> None:
    card = _card(client)
    assert client.post("/cds-services/patient-view/feedback", json=_accepted(card)).status_code
    store = Store(settings.database_url)
    kept = store.purge(audit_days=1, feedback_days=1)  # all of it is minutes old
    assert set(kept.values()) == {0}
    assert set(kept) == {
        *("cards", "evaluations", "feedback", "jwt_ids"),
        *("follow_ups", "possible_misses"),
    }
    deleted = store.purge(audit_days=0, feedback_days=0)
    assert deleted["evaluations"] == 1
    assert deleted["cards"] == 1
    assert deleted["feedback"] == 1
    store.engine.dispose()
    assert _rows(settings, "evaluations") == _rows(settings, "cards") == []
