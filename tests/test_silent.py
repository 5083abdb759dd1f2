"""Silent (shadow) rules: evaluated and audited, never shown, and without effect on the answer."""

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.knowledge import load_knowledge
from cds_service.models import HookRequest, dump
from cds_service.triage import Triage
from tests.conftest import EXAMPLE_TODAY, ROOT, app_settings, load_example
from tests.test_examples import without_uuids

SILENT = "red-flag-cauda-equina"
EXAMPLES = [
    "red-flag-cauda-equina--diagnosis-icd10",
    "imaging-supported-by-red-flag--order-sign-mri-cauda-equina",  # its red flag lifts a card
]
ADMIN = {"Authorization": "Bearer committee-token"}


def _cards(triage: Triage, name: str) -> Any:
    request, _ = load_example(name)
    body = HookRequest.model_validate(request)
    return without_uuids(dump(triage.evaluate(body, request["hook"], EXAMPLE_TODAY)))["cards"]


@pytest.fixture(scope="module")
def without_the_rule(tmp_path_factory: pytest.TempPathFactory) -> Triage:
    """The knowledge base with the silent rule's file deleted: what "did not exist" means."""
    rules = tmp_path_factory.mktemp("rules") / "rules"
    shutil.copytree(ROOT / "rules", rules)
    (rules / "rules" / f"{SILENT}.yaml").unlink()
    return Triage(load_knowledge(rules))


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_answer_is_as_if_the_silent_rule_did_not_exist(
    name: str, triage: Triage, without_the_rule: Triage
) -> None:
    silenced = Triage(triage.knowledge, modes={SILENT: "silent"})
    answer = _cards(silenced, name)
    assert answer == _cards(without_the_rule, name)
    assert answer != _cards(triage, name)  # the rule does change this answer when active


def test_the_would_be_card_is_the_card_the_active_rule_gives(triage: Triage) -> None:
    request, _ = load_example(EXAMPLES[0])
    body = HookRequest.model_validate(request)
    silenced = Triage(triage.knowledge, modes={SILENT: "silent"})
    hook = silenced.hooks[request["hook"]]
    context = hook.context.model_validate(request["context"])
    evaluation = silenced.run(body, context, hook, EXAMPLE_TODAY)
    assert [rule for rule, _ in evaluation.silent_cards] == [SILENT]
    assert SILENT in evaluation.rules_fired
    assert SILENT not in evaluation.card_rules
    active = [
        c
        for c in _cards(triage, EXAMPLES[0])
        if c["extension"]["org.spine-cds.rule"]["id"] == SILENT
    ]
    assert [without_uuids(dump(card)) for _, card in evaluation.silent_cards] == active


def test_only_rules_with_cards_can_be_silenced(triage: Triage) -> None:
    with pytest.raises(ValueError, match="only rules with a card"):
        Triage(triage.knowledge, modes={"derive-fever": "silent"})
    with pytest.raises(ValueError, match="unknown rules"):
        Triage(triage.knowledge, modes={"no-such-rule": "silent"})


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def client(request: pytest.FixtureRequest) -> Iterator[TestClient]:
    """The service with the rule silenced by configuration, on SQLite and PostgreSQL."""
    overrides: dict[str, Any] = {"rule_modes": {SILENT: "silent"}, "admin_token": "committee-token"}
    if request.param == "postgresql":
        overrides["database_url"] = request.getfixturevalue("postgres_url")
    settings = app_settings(**overrides)
    with TestClient(create_app(settings)) as test_client:
        yield test_client
    if request.param == "postgresql":
        engine = sa.create_engine(settings.database_url)
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    "DROP TABLE possible_misses, follow_ups, feedback, cards, evaluations, jwt_ids,"
                    " alembic_version"
                )
            )
        engine.dispose()


def test_a_silent_rule_leaves_the_answer_and_stays_in_the_report(client: TestClient) -> None:
    request, _ = load_example(EXAMPLES[0])
    answer = client.post(f"/cds-services/{request['hook']}", json=request).json()
    shown = [card["extension"]["org.spine-cds.rule"]["id"] for card in answer["cards"]]
    assert SILENT not in shown

    report = client.get("/admin/report", headers=ADMIN).json()
    (row,) = [row for row in report["rules"] if row["rule"] == SILENT]
    assert (row["mode"], row["cards"], row["silent_cards"]) == ("silent", 0, 1)
    assert report["totals"]["silent_cards"] == 1
    assert report["totals"]["cards"] == len(shown)

    assert client.get("/health").json()["silent_rules"] == [SILENT]
    (service, *_) = client.get("/cds-services").json()["services"]
    assert service["extension"]["org.spine-cds.ruleset"]["silent"] == [SILENT]


def test_a_would_be_card_takes_no_feedback(client: TestClient) -> None:
    request, _ = load_example(EXAMPLES[0])
    client.post(f"/cds-services/{request['hook']}", json=request)
    rows = client.get("/admin/report", headers=ADMIN).json()["rules"]
    assert any(row["silent_cards"] for row in rows)
    store = client.app.state.wiring.store  # type: ignore[attr-defined]
    with store.engine.connect() as connection:
        uuid = connection.execute(sa.text("SELECT uuid FROM cards WHERE silent")).scalar_one()
    feedback = {
        "feedback": [
            {
                "card": uuid,
                "outcome": "overridden",
                "overrideReason": {"userComment": "never shown"},
                "outcomeTimestamp": "2026-11-01T10:00:00Z",
            }
        ]
    }
    answer = client.post(f"/cds-services/{request['hook']}/feedback", json=feedback)
    assert answer.status_code == 400
    assert "unknown card" in answer.json()["issue"][0]["diagnostics"]
