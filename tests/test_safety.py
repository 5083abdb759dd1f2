"""The safety monitor and the pseudonymous linkage, through the service's own API, on SQLite and
on a real PostgreSQL server: one patient reassured, then seen again with a metastatic cancer."""

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient

from cds_service.analytics import report
from cds_service.app import create_app
from cds_service.knowledge import Knowledge
from cds_service.safety import Monitor, Pseudonyms, watches
from cds_service.storage import (
    Store,
    cards,
    evaluations,
    follow_ups,
    metadata,
    monday,
    possible_misses,
)
from tests.conftest import app_settings, load_example

ADMIN = {"Authorization": "Bearer committee"}
KEY = "a-secret-pseudonym-key"
PATIENT = "pt-seen-twice"
CLINICIAN = "Practitioner/dr-house"
REASSURED = "primary-care-acute-nonspecific--two-weeks"  # an info card: primary care, no imaging
METASTASES = "red-flag-metastatic-cord-compression--bone-metastases-without-deficit"
PRIMARY_CARE = "primary-care-acute-nonspecific"
MALIGNANCY = "red-flag-malignancy"


def _request(name: str, patient: str = PATIENT, user: str = CLINICIAN) -> dict[str, Any]:
    """An example request, about `patient`, made by `user`."""
    request, _ = load_example(name)
    text = json.dumps(request).replace(request["context"]["patientId"], patient)
    about: dict[str, Any] = json.loads(text)
    about["context"]["userId"] = user
    return about


def _evaluate(client: TestClient, name: str, **who: str) -> list[dict[str, Any]]:
    request = _request(name, **who)
    response = client.post(f"/cds-services/{request['hook']}", json=request)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["cards"]
    return found


def _backdate(engine: sa.Engine, days: float) -> None:
    """Move every evaluation so far (and its cards) `days` into the past."""
    with engine.begin() as connection:
        rows = connection.execute(sa.select(evaluations.c.id, evaluations.c.created_at)).all()
        for row in rows:
            moved = row.created_at.replace(tzinfo=row.created_at.tzinfo or UTC) - timedelta(days)
            connection.execute(
                evaluations.update().where(evaluations.c.id == row.id).values(created_at=moved)
            )
            connection.execute(
                cards.update()
                .where(cards.c.evaluation_id == row.id)
                .values(created_at=moved, week=monday(moved))
            )


def _everything(engine: sa.Engine) -> dict[str, str]:
    """Every table's rows as text (for looking for an identifier anywhere in the store)."""
    with engine.connect() as connection:
        return {
            table.name: " ".join(str(tuple(row)) for row in connection.execute(table.select()))
            for table in metadata.sorted_tables
        }


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database's URL (dropped afterwards on the shared PostgreSQL server)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    url: str = request.getfixturevalue("postgres_url")
    yield url
    engine = sa.create_engine(url)
    metadata.drop_all(engine)
    with engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()


@pytest.fixture
def client(database: str) -> Iterator[TestClient]:
    settings = app_settings(database_url=database, admin_token="committee", pseudonym_key=KEY)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _engine(client: TestClient) -> sa.Engine:
    engine: sa.Engine = client.app.state.wiring.store.engine  # type: ignore[attr-defined]
    return engine


def test_a_reassured_patient_with_metastases_30_days_later_is_one_possible_miss(
    client: TestClient,
) -> None:
    (first,) = _evaluate(client, REASSURED)
    assert first["indicator"] == "info"
    _backdate(_engine(client), 30)
    (second,) = _evaluate(client, METASTASES)
    assert second["indicator"] == "critical"

    report = client.get("/admin/report", headers=ADMIN).json()
    assert report["linked"] is True
    assert report["safety"] == {
        "window_days": 90,
        "rules": [
            {
                "rule": PRIMARY_CARE,
                "title": "Acute non-specific low back pain",
                "followed_up": 1,
                "possible_misses": 1,
                "miss_rate": 1.0,
            }
        ],
    }
    (case,) = client.get("/admin/safety", headers=ADMIN).json()
    assert case["card"] == first["uuid"]
    assert (case["rule"], case["summary"], case["indicator"]) == (
        PRIMARY_CARE,
        first["summary"],
        "info",
    )
    assert (case["red_flag"], case["days_later"]) == (MALIGNANCY, 30)
    today = datetime.now(UTC).date()
    assert (case["card_date"], case["found_date"]) == (
        (today - timedelta(days=30)).isoformat(),
        today.isoformat(),
    )
    assert {"system": "ICD-10-CM", "code": "C79.51"} in [
        {"system": e["system"], "code": e["code"]} for e in case["evidence"]
    ]
    assert PATIENT not in json.dumps(case)

    stored = _everything(_engine(client))
    assert not [table for table, text in stored.items() if CLINICIAN in text]
    assert [table for table, text in stored.items() if PATIENT in text] == ["cards"]
    with _engine(client).connect() as connection:
        contents = connection.execute(sa.select(cards.c.content)).scalars().all()
        keys = connection.execute(
            sa.select(evaluations.c.patient_key, evaluations.c.clinician_key)
        ).all()
    assert all(PATIENT in json.dumps(content) for content in contents if "suggestions" in content)
    pseudonyms = Pseudonyms(KEY.encode())
    assert set(keys) == {(pseudonyms.patient(PATIENT), pseudonyms.clinician(CLINICIAN))}


def test_the_window_and_other_patients_are_not_followed(client: TestClient) -> None:
    _evaluate(client, REASSURED, patient="pt-long-ago")
    _backdate(_engine(client), 91)  # past the 90-day window
    _evaluate(client, REASSURED, patient="pt-other")
    _evaluate(client, METASTASES, patient="pt-long-ago")
    _evaluate(client, METASTASES, patient="pt-third")  # never reassured
    assert client.get("/admin/report", headers=ADMIN).json()["safety"]["rules"] == []
    assert client.get("/admin/safety", headers=ADMIN).json() == []


def test_a_follow_up_without_a_red_flag_counts_once_and_is_no_miss(client: TestClient) -> None:
    _evaluate(client, REASSURED)
    _evaluate(client, REASSURED)  # seen again: the first card followed up, no red flag
    _evaluate(client, REASSURED)  # again: the first once, the second followed up
    (row,) = client.get("/admin/report", headers=ADMIN).json()["safety"]["rules"]
    assert (row["followed_up"], row["possible_misses"], row["miss_rate"]) == (2, 0, 0.0)


def test_without_a_key_nothing_is_linked(database: str) -> None:
    settings = app_settings(database_url=database, admin_token="committee")
    with TestClient(create_app(settings)) as client:
        _evaluate(client, REASSURED)
        _evaluate(client, METASTASES)
        report = client.get("/admin/report", headers=ADMIN).json()
        engine = _engine(client)
        with engine.connect() as connection:
            keys = connection.execute(
                sa.select(evaluations.c.patient_key, evaluations.c.clinician_key)
            ).all()
    assert report["linked"] is False
    assert report["safety"]["rules"] == report["clinicians"]["rows"] == []
    assert set(keys) == {(None, None)}


def test_a_failing_monitor_does_not_withhold_the_cards(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    _evaluate(client, REASSURED)
    with _engine(client).begin() as connection:  # the monitor's tables are gone
        possible_misses.drop(connection)
        follow_ups.drop(connection)
    with caplog.at_level(logging.ERROR, logger="cds_service"):
        (card,) = _evaluate(client, METASTASES)
    assert card["indicator"] == "critical"
    assert "safety monitor failed" in caplog.text
    with _engine(client).connect() as connection:  # the evaluation itself is audited
        assert connection.execute(sa.select(sa.func.count()).select_from(evaluations)).scalar() == 2
    with _engine(client).begin() as connection:  # back, for the fixture's clean-up
        follow_ups.create(connection)
        possible_misses.create(connection)


def test_retention_takes_the_follow_ups_and_misses_with_their_cards(client: TestClient) -> None:
    _evaluate(client, REASSURED)
    _evaluate(client, METASTASES)
    store: Store = client.app.state.wiring.store  # type: ignore[attr-defined]
    assert store.purge(audit_days=365, feedback_days=1095)["possible_misses"] == 0
    _backdate(store.engine, 400)
    deleted = store.purge(audit_days=365, feedback_days=1095)
    assert (deleted["possible_misses"], deleted["follow_ups"]) == (1, 1)
    assert (deleted["cards"], deleted["evaluations"]) == (2, 2)


def test_feedback_per_clinician_counts_by_pseudonym(client: TestClient) -> None:
    """Eleven imaging cards for one clinician (removed three times, kept five, three ignored)
    and two for another: the first shown, the second under the minimum cell."""
    name = "imaging-acute-without-red-flag--order-select-mri"
    shown = [_evaluate(client, name, patient=f"pt-{n}")[0] for n in range(11)]
    for n in range(2):
        _evaluate(client, name, patient=f"pt-b{n}", user="Practitioner/dr-b")
    answers = [("accepted", card) for card in shown[:3]] + [("overridden", c) for c in shown[3:8]]
    for n, (outcome, card) in enumerate(answers):
        item: dict[str, Any] = {
            "card": card["uuid"],
            "outcome": outcome,
            "outcomeTimestamp": f"2030-01-01T10:{n:02d}:00Z",
        }
        if outcome == "accepted":
            item["acceptedSuggestions"] = [{"id": card["suggestions"][0]["uuid"]}]
        sent = client.post("/cds-services/order-select/feedback", json={"feedback": [item]})
        assert sent.status_code == 200, sent.text

    pseudonyms = Pseudonyms(KEY.encode())
    dr_a, dr_b = pseudonyms.clinician(CLINICIAN), pseudonyms.clinician("Practitioner/dr-b")
    rows = client.get("/admin/report", headers=ADMIN).json()["clinicians"]["rows"]
    imaging = "imaging-acute-without-red-flag"
    by_clinician = {row["clinician"]: row for row in rows if row["rule"] == imaging}
    assert by_clinician[dr_a] | {"title": None} == {
        "clinician": dr_a,
        "rule": imaging,
        "title": None,
        "suppressed": False,
        "cards": 11,
        "accepted": 3,
        "overridden": 5,
        "ignored": 3,
        "removed_share": 0.273,
        "kept_share": 0.455,
    }
    assert by_clinician[dr_b]["suppressed"] is True
    assert by_clinician[dr_b]["cards"] is None

    export = client.get(f"/admin/clinicians/{dr_a}", headers=ADMIN).json()
    assert [row["cards"] for row in export["rules"] if row["rule"] == imaging] == [11]
    assert [row["cards"] for row in export["all_clinicians"] if row["rule"] == imaging] == [13]
    assert dr_b not in json.dumps(export)


def test_the_admin_reads_need_the_token_and_a_pseudonym(client: TestClient) -> None:
    assert client.get("/admin/safety").status_code == 401
    assert client.get(f"/admin/clinicians/{'a' * 64}").status_code == 401
    refused = client.get("/admin/clinicians/Practitioner%2F1", headers=ADMIN)
    assert refused.status_code in (400, 404)
    assert client.get("/admin/clinicians/not-hex", headers=ADMIN).status_code == 400
    assert client.get("/admin/safety?limit=0", headers=ADMIN).status_code == 400
    empty = client.get(f"/admin/clinicians/{'a' * 64}", headers=ADMIN).json()
    assert (empty["rules"], empty["min_cell"]) == ([], 10)


def test_the_monitor_watches_the_cards_that_say_no_red_flag(knowledge: Knowledge) -> None:
    monitor = Monitor.of(knowledge, 90)
    assert PRIMARY_CARE in monitor.watched  # reassures
    assert "imaging-acute-without-red-flag" in monitor.watched  # removes the order
    assert "physical-therapy-subacute" in monitor.watched  # refers routinely
    assert "imaging-supported-by-red-flag" not in monitor.watched  # a red flag is there
    assert "pain-management-opioid-overdose" not in monitor.watched  # urgent
    assert monitor.red_flags == {
        rule.id for rule in knowledge.rules.values() if "red-flag" in rule.derive
    }
    assert all(knowledge.rules[rule].card.indicator == "critical" for rule in monitor.red_flags)  # type: ignore[union-attr]
    assert not monitor.watched & monitor.red_flags
    assert all(watches(knowledge.rules[rule]) for rule in monitor.watched)


def test_pseudonyms_are_keyed_and_kind_separated() -> None:
    one, other = Pseudonyms(b"key-1"), Pseudonyms(b"key-2")
    assert one.patient("123") == Pseudonyms(b"key-1").patient("123")
    assert one.patient("123") != other.patient("123")  # a new key ends linkage
    assert one.patient("123") != one.clinician("123")
    assert len(one.clinician("Practitioner/1")) == 64


def test_the_migration_fills_the_cards_it_finds(tmp_path: Path) -> None:
    """A store at 0005 with a card and its feedback: 0006 copies the evaluation's columns and
    settles the outcome, so the report reads them as before."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    config = Config()
    config.set_main_option(
        "script_location", str(Path(__file__).parent.parent / "cds_service" / "migrations")
    )
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0005")
        connection.execute(
            sa.text(
                "INSERT INTO evaluations (id, hook_instance, service, ruleset_version,"
                " rules_fired, duration_ms, created_at) VALUES"
                " (1, 'h', 'order-sign', '0.4.0', '[]', 1.0, '2026-11-08 23:30:00.000000')"
            )
        )
        connection.execute(
            sa.text(
                "INSERT INTO cards (uuid, evaluation_id, rule_id, indicator, summary, silent)"
                " VALUES ('c1', 1, 'imaging-acute-without-red-flag', 'warning', 's', 0)"
            )
        )
        connection.execute(
            sa.text(
                "INSERT INTO feedback (card_uuid, service, outcome, outcome_timestamp,"
                " override_reason, received_at) VALUES ('c1', 'order-sign', 'overridden',"
                " '2026-11-09 00:00:00.000000', :reason, '2026-11-09 00:00:00.000000')"
            ),
            {"reason": json.dumps({"reason": {"code": "not-indicated", "display": "No"}})},
        )
    engine.dispose()
    store = Store(url)  # opening it migrates to head
    with store.engine.connect() as connection:
        card = connection.execute(sa.select(cards)).one()
    assert (card.service, card.week.isoformat(), card.outcome) == (
        "order-sign",
        "2026-11-02",
        "overridden",
    )
    assert (card.reason_code, card.reason_display, card.explained) == ("not-indicated", "No", True)
    totals = report(store.engine, None, None)["totals"]
    assert (totals["cards"], totals["overridden"]) == (1, 1)
    store.engine.dispose()


def test_a_card_whose_feedback_is_purged_counts_as_ignored_again(client: TestClient) -> None:
    (card,) = _evaluate(client, METASTASES)
    item = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2030-01-01T10:00Z"}
    sent = client.post("/cds-services/patient-view/feedback", json={"feedback": [item]})
    assert sent.status_code == 200, sent.text
    totals = client.get("/admin/report", headers=ADMIN).json()["totals"]
    assert (totals["overridden"], totals["ignored"]) == (1, 0)
    store: Store = client.app.state.wiring.store  # type: ignore[attr-defined]
    assert store.purge(audit_days=365, feedback_days=0)["feedback"] == 1  # the card stays
    totals = client.get("/admin/report", headers=ADMIN).json()["totals"]
    assert (totals["cards"], totals["overridden"], totals["ignored"]) == (1, 0, 1)
