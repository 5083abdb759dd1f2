"""The committee's report: exact figures over a small store counted by hand, on SQLite and on a
real PostgreSQL server (whose session time zone is not UTC, to show weeks and dates are UTC)."""

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cds_service.analytics import FREE_TEXT, Report, feedback_rows, render, report
from cds_service.storage import Store, cards, evaluations, feedback, metadata

RED_FLAG = "red-flag-cauda-equina"  # critical, active
IMAGING = "imaging-acute-without-red-flag"  # warning, mode not given
THERAPY = "physical-therapy-subacute"  # info, silent: its cards are audited, never shown
MODES = {RED_FLAG: "active", THERAPY: "silent"}
SNOMED = "http://snomed.info/sct"
NOT_INDICATED = {"system": SNOMED, "code": "not-indicated", "display": "Not clinically indicated"}
PATIENT_DECLINED = {"code": "patient-declined", "display": "Patient declined"}

# The report's window is [2026-11-02, 2026-11-23): three weeks, Mondays 11-02, 11-09, 11-16.
EVALUATIONS = [  # id, service, created_at (UTC)
    (10, "patient-view", "2026-11-01 23:59:59"),  # before the window
    (1, "patient-view", "2026-11-02 09:00"),
    (2, "patient-view", "2026-11-04 10:00"),
    (3, "order-sign", "2026-11-08 23:30"),  # Sunday: week of 11-02 (Monday 12:30 in Auckland)
    (4, "patient-view", "2026-11-09 00:00"),
    (5, "order-sign", "2026-11-12 15:00"),
    (6, "patient-view", "2026-11-15 23:59:59"),  # no card
    (7, "patient-view", "2026-11-16 08:00"),
    (8, "order-sign", "2026-11-20 12:00"),
    (11, "order-sign", "2026-11-23 00:00"),  # the window's end, excluded
]
CARDS = [  # uuid, evaluation id, rule, indicator, silent
    ("c0", 10, RED_FLAG, "critical", False),
    ("c1", 1, RED_FLAG, "critical", False),
    ("c2", 1, THERAPY, "info", True),
    ("c3", 2, IMAGING, "warning", False),
    ("c4", 2, RED_FLAG, "critical", False),
    ("c5", 3, IMAGING, "warning", False),
    ("c6", 3, THERAPY, "info", True),
    ("c17", 3, RED_FLAG, "critical", False),
    ("c7", 4, RED_FLAG, "critical", False),
    ("c15", 4, IMAGING, "warning", False),
    ("c8", 5, IMAGING, "warning", False),
    ("c9", 5, THERAPY, "info", True),
    ("c10", 7, RED_FLAG, "critical", False),
    ("c11", 7, IMAGING, "warning", False),
    ("c12", 7, THERAPY, "info", True),
    ("c14", 8, IMAGING, "warning", False),
    ("c99", 11, IMAGING, "warning", False),
]
FEEDBACK: list[tuple[int, str, str, str, dict[str, Any] | None]] = [
    # id (the order received), card, outcome, outcome_timestamp (UTC), overrideReason
    (1, "c0", "accepted", "2026-11-02 00:05", None),  # card outside the window
    (2, "c1", "accepted", "2026-11-02 09:10", None),
    (3, "c3", "overridden", "2026-11-04 10:30", {"reason": NOT_INDICATED}),
    (4, "c3", "accepted", "2026-11-04 11:00", None),  # the latest decides: accepted
    (5, "c4", "accepted", "2026-11-04 10:05", None),
    (6, "c4", "overridden", "2026-11-04 12:00", {"userComment": "already referred"}),
    (7, "c5", "overridden", "2026-11-09 00:30", {"reason": {"code": "already-imaged"}}),
    (8, "c17", "overridden", "2026-11-09 00:00", None),  # no reason at all
    (9, "c15", "overridden", "2026-11-09 00:40", {"reason": NOT_INDICATED}),
    (10, "c8", "overridden", "2026-11-12 15:20", {"reason": NOT_INDICATED, "userComment": "x"}),
    (11, "c8", "accepted", "2026-11-12 15:20", None),  # same instant: the override decides
    (12, "c10", "overridden", "2026-11-16 08:45", {"reason": PATIENT_DECLINED}),
    (13, "c14", "overridden", "2026-11-20 12:10", {"reason": NOT_INDICATED}),
    (14, "c99", "overridden", "2026-11-23 00:10", {"reason": NOT_INDICATED}),
]

# Counted by hand from the rows above (window 2026-11-02 to 2026-11-23, MODES).
EXPECTED: Report = {
    "since": "2026-11-02",
    "until": "2026-11-23",
    "totals": {
        "evaluations": 8,
        "cards": 11,
        "silent_cards": 4,
        "accepted": 2,
        "overridden": 7,
        "ignored": 2,
    },
    "services": [
        {"service": "order-sign", "evaluations": 3, "cards": 4, "silent_cards": 2},
        {"service": "patient-view", "evaluations": 5, "cards": 7, "silent_cards": 2},
    ],
    "rules": [
        {
            "rule": IMAGING,
            "mode": None,
            "cards": 6,
            "silent_cards": 0,
            "accepted": 1,
            "overridden": 4,
            "ignored": 1,
            "acceptance_rate": 0.167,
            "override_rate": 0.667,
            "mean_minutes_to_feedback": 32.0,  # (30 + 60 + 40 + 20 + 10) / 5
        },
        {
            "rule": THERAPY,
            "mode": "silent",
            "cards": 0,
            "silent_cards": 4,
            "accepted": 0,
            "overridden": 0,
            "ignored": 0,
            "acceptance_rate": None,
            "override_rate": None,
            "mean_minutes_to_feedback": None,
        },
        {
            "rule": RED_FLAG,
            "mode": "active",
            "cards": 5,
            "silent_cards": 0,
            "accepted": 1,
            "overridden": 3,
            "ignored": 1,
            "acceptance_rate": 0.2,
            "override_rate": 0.6,
            "mean_minutes_to_feedback": 22.5,  # (10 + 5 + 30 + 45) / 4
        },
    ],
    "indicators": [
        {"indicator": "critical", "cards": 5, "accepted": 1, "overridden": 3, "ignored": 1},
        {"indicator": "warning", "cards": 6, "accepted": 1, "overridden": 4, "ignored": 1},
    ],
    "weeks": [
        {
            "week": "2026-11-02",
            "rule": IMAGING,
            "cards": 2,
            "silent_cards": 0,
            "accepted": 1,
            "overridden": 1,
            "ignored": 0,
        },
        {
            "week": "2026-11-02",
            "rule": THERAPY,
            "cards": 0,
            "silent_cards": 2,
            "accepted": 0,
            "overridden": 0,
            "ignored": 0,
        },
        {
            "week": "2026-11-02",
            "rule": RED_FLAG,
            "cards": 3,
            "silent_cards": 0,
            "accepted": 1,
            "overridden": 2,
            "ignored": 0,
        },
        {
            "week": "2026-11-09",
            "rule": IMAGING,
            "cards": 2,
            "silent_cards": 0,
            "accepted": 0,
            "overridden": 2,
            "ignored": 0,
        },
        {
            "week": "2026-11-09",
            "rule": THERAPY,
            "cards": 0,
            "silent_cards": 1,
            "accepted": 0,
            "overridden": 0,
            "ignored": 0,
        },
        {
            "week": "2026-11-09",
            "rule": RED_FLAG,
            "cards": 1,
            "silent_cards": 0,
            "accepted": 0,
            "overridden": 0,
            "ignored": 1,
        },
        {
            "week": "2026-11-16",
            "rule": IMAGING,
            "cards": 2,
            "silent_cards": 0,
            "accepted": 0,
            "overridden": 1,
            "ignored": 1,
        },
        {
            "week": "2026-11-16",
            "rule": THERAPY,
            "cards": 0,
            "silent_cards": 1,
            "accepted": 0,
            "overridden": 0,
            "ignored": 0,
        },
        {
            "week": "2026-11-16",
            "rule": RED_FLAG,
            "cards": 1,
            "silent_cards": 0,
            "accepted": 0,
            "overridden": 1,
            "ignored": 0,
        },
    ],
    "override_reasons": [
        {
            "rule": IMAGING,
            "code": "not-indicated",
            "display": "Not clinically indicated",
            "count": 3,
        },
        {"rule": IMAGING, "code": "already-imaged", "display": "already-imaged", "count": 1},
        {"rule": RED_FLAG, "code": None, "display": FREE_TEXT, "count": 1},
        {"rule": RED_FLAG, "code": "patient-declined", "display": "Patient declined", "count": 1},
    ],
}


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _evaluation(id_: int, service: str, created_at: str) -> dict[str, Any]:
    return {
        "id": id_,
        "hook_instance": f"hook-{id_}",
        "service": service,
        "ruleset_version": "0.4.0",
        "rules_fired": [],
        "duration_ms": 1.0,
        "created_at": _at(created_at),
    }


def _card(uuid: str, evaluation_id: int, rule: str, indicator: str, silent: bool) -> dict[str, Any]:
    return {
        "uuid": uuid,
        "evaluation_id": evaluation_id,
        "rule_id": rule,
        "indicator": indicator,
        "summary": f"{rule} card",
        "silent": silent,
    }


def _feedback(
    id_: int, card: str, outcome: str, at: str, reason: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "id": id_,
        "card_uuid": card,
        "service": "patient-view",
        "outcome": outcome,
        "outcome_timestamp": _at(at),
        "accepted_suggestions": [{"id": f"{card}-s"}] if outcome == "accepted" else None,
        "override_reason": reason,
        "received_at": _at(at),
    }


def _fill(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        connection.execute(evaluations.insert(), [_evaluation(*row) for row in EVALUATIONS])
        connection.execute(cards.insert(), [_card(*row) for row in CARDS])
        connection.execute(feedback.insert(), [_feedback(*row) for row in FEEDBACK])


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty store, migrated."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    store = Store(url)
    yield store
    if request.param == "postgresql":  # a clean database for the next test
        metadata.drop_all(store.engine)
        with store.engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    store.engine.dispose()


@pytest.fixture
def engine(store: Store) -> Iterator[sa.Engine]:
    """The filled store; on PostgreSQL read through sessions in Auckland time (UTC+13 then)."""
    _fill(store.engine)
    if store.engine.dialect.name == "sqlite":
        yield store.engine
        return
    auckland = sa.create_engine(
        store.engine.url, connect_args={"options": "-c timezone=Pacific/Auckland"}
    )
    yield auckland
    auckland.dispose()


def test_the_report_is_the_hand_count(engine: sa.Engine) -> None:
    assert report(engine, date(2026, 11, 2), date(2026, 11, 23), MODES) == EXPECTED


def test_open_bounds_take_every_row(engine: sa.Engine) -> None:
    result = report(engine, None, None)
    assert (result["since"], result["until"]) == (None, None)
    assert result["totals"] == {
        "evaluations": 10,
        "cards": 13,
        "silent_cards": 4,
        "accepted": 3,
        "overridden": 8,
        "ignored": 2,
    }
    assert [rule["mode"] for rule in result["rules"]] == [None, None, None]
    assert result["override_reasons"][0] == {
        "rule": IMAGING,
        "code": "not-indicated",
        "display": "Not clinically indicated",
        "count": 4,
    }


def test_one_bound_alone(engine: sa.Engine) -> None:
    since = report(engine, date(2026, 11, 16), None)
    assert since["totals"]["evaluations"] == 3  # 7, 8 and 11
    assert [week["week"] for week in since["weeks"]] == ["2026-11-16"] * 3 + ["2026-11-23"]
    until = report(engine, None, date(2026, 11, 2))
    assert until["totals"] == {
        "evaluations": 1,
        "cards": 1,
        "silent_cards": 0,
        "accepted": 1,
        "overridden": 0,
        "ignored": 0,
    }
    assert until["weeks"][0]["week"] == "2026-10-26"  # Sunday 11-01 is in the week of 10-26


def test_an_empty_window_is_zeros_and_empty_lists(engine: sa.Engine) -> None:
    empty: Report = {
        "since": "2027-01-01",
        "until": "2027-02-01",
        "totals": {
            "evaluations": 0,
            "cards": 0,
            "silent_cards": 0,
            "accepted": 0,
            "overridden": 0,
            "ignored": 0,
        },
        "services": [],
        "rules": [],
        "indicators": [],
        "weeks": [],
        "override_reasons": [],
    }
    assert report(engine, date(2027, 1, 1), date(2027, 2, 1)) == empty


def test_feedback_rows_newest_first_paged(engine: sa.Engine) -> None:
    window = (date(2026, 11, 2), date(2026, 11, 23))
    every = feedback_rows(engine, *window, limit=100, offset=0)
    assert [(row["card"], row["outcome"]) for row in every] == [
        ("c14", "overridden"),
        ("c10", "overridden"),
        ("c8", "accepted"),
        ("c8", "overridden"),
        ("c15", "overridden"),
        ("c5", "overridden"),
        ("c17", "overridden"),
        ("c4", "overridden"),
        ("c3", "accepted"),
        ("c3", "overridden"),
        ("c4", "accepted"),
        ("c1", "accepted"),
    ]
    assert feedback_rows(engine, *window, limit=3, offset=1) == [
        {
            "card": "c10",
            "rule": RED_FLAG,
            "service": "patient-view",
            "indicator": "critical",
            "outcome": "overridden",
            "outcome_timestamp": "2026-11-16T08:45:00+00:00",
            "reason_code": "patient-declined",
            "reason_display": "Patient declined",
            "comment": None,
            "accepted_suggestions": [],
        },
        {
            "card": "c8",
            "rule": IMAGING,
            "service": "order-sign",
            "indicator": "warning",
            "outcome": "accepted",
            "outcome_timestamp": "2026-11-12T15:20:00+00:00",
            "reason_code": None,
            "reason_display": None,
            "comment": None,
            "accepted_suggestions": ["c8-s"],
        },
        {
            "card": "c8",
            "rule": IMAGING,
            "service": "order-sign",
            "indicator": "warning",
            "outcome": "overridden",
            "outcome_timestamp": "2026-11-12T15:20:00+00:00",
            "reason_code": "not-indicated",
            "reason_display": "Not clinically indicated",
            "comment": "x",
            "accepted_suggestions": [],
        },
    ]
    assert [row["card"] for row in feedback_rows(engine, None, None, limit=2, offset=0)] == [
        "c99",
        "c14",
    ]


def test_only_the_ten_commonest_reasons_per_rule(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    counts = {f"code-{n:02d}": 1 for n in range(1, 13)} | {"code-05": 3, "code-09": 2}
    overrides = [(f"{code}-{i}", code) for code, count in counts.items() for i in range(count)]
    with store.engine.begin() as connection:
        connection.execute(evaluations.insert(), [_evaluation(1, "order-sign", "2026-11-02")])
        connection.execute(
            cards.insert(), [_card(uuid, 1, IMAGING, "warning", False) for uuid, _ in overrides]
        )
        connection.execute(
            feedback.insert(),
            [
                _feedback(i, uuid, "overridden", "2026-11-02 01:00", {"reason": {"code": code}})
                for i, (uuid, code) in enumerate(overrides, 1)
            ],
        )
    reasons = report(store.engine, None, None)["override_reasons"]
    store.engine.dispose()
    assert [(reason["code"], reason["count"]) for reason in reasons] == [
        ("code-05", 3),
        ("code-09", 2),
        ("code-01", 1),
        ("code-02", 1),
        ("code-03", 1),
        ("code-04", 1),
        ("code-06", 1),
        ("code-07", 1),
        ("code-08", 1),
        ("code-10", 1),
    ]


def test_json_is_the_report() -> None:
    assert json.loads(render(EXPECTED, "json")) == EXPECTED


def test_csv_is_the_rules_with_a_header() -> None:
    rows = list(csv.DictReader(io.StringIO(render(EXPECTED, "csv"))))
    assert rows[0] == {
        "rule": IMAGING,
        "mode": "",
        "cards": "6",
        "silent_cards": "0",
        "accepted": "1",
        "overridden": "4",
        "ignored": "1",
        "acceptance_rate": "0.167",
        "override_rate": "0.667",
        "mean_minutes_to_feedback": "32.0",
    }
    assert [row["rule"] for row in rows] == [IMAGING, THERAPY, RED_FLAG]
    assert rows[1]["acceptance_rate"] == rows[1]["mean_minutes_to_feedback"] == ""


def test_table_for_the_minutes() -> None:
    lines = render(EXPECTED, "table").splitlines()
    assert lines[0] == "CDS report, 2026-11-02 to 2026-11-23 (end excluded)"
    assert lines[1] == (
        "8 evaluations, 11 cards issued (2 accepted, 7 overridden, 2 ignored), 4 silent cards"
    )
    header, *rules = lines[3:7]
    assert header.split() == [
        "rule",
        "mode",
        "cards",
        "silent",
        "accepted",
        "overridden",
        "ignored",
        "accepted",
        "%",
        "overridden",
        "%",
        "minutes",
        "to",
        "feedback",
    ]
    assert [line.split() for line in rules] == [
        [IMAGING, "-", "6", "0", "1", "4", "1", "16.7%", "66.7%", "32.0"],
        [THERAPY, "silent", "0", "4", "0", "0", "0", "-", "-", "-"],
        [RED_FLAG, "active", "5", "0", "1", "3", "1", "20.0%", "60.0%", "22.5"],
    ]
    assert len({len(line) for line in [header, *rules]}) == 1  # aligned columns
    assert lines[8] == "Top override reasons"
    assert lines[9].split() == ["rule", "reason", "count"]
    assert [
        [line.split(None, 1)[0], *line.split(None, 1)[1].rsplit(None, 1)] for line in lines[10:]
    ] == [
        [IMAGING, "Not clinically indicated", "3"],
        [IMAGING, "already-imaged", "1"],
        [RED_FLAG, FREE_TEXT, "1"],
        [RED_FLAG, "Patient declined", "1"],
    ]
