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

from cds_service.analytics import (
    FREE_TEXT,
    Report,
    RuleInfo,
    _run,
    clinician_report,
    feedback_rows,
    render,
    render_clinician,
    report,
    safety_cases,
)
from cds_service.storage import (
    Store,
    cards,
    evaluations,
    feedback,
    follow_ups,
    metadata,
    monday,
    possible_misses,
)

RED_FLAG = "red-flag-cauda-equina"  # critical, active
IMAGING = "imaging-acute-without-red-flag"  # warning, active, its card removes the order
THERAPY = "physical-therapy-subacute"  # info, silent: its cards are audited, never shown
RULES = {
    RED_FLAG: RuleInfo("Cauda equina", "active", False, "critical"),
    IMAGING: RuleInfo("Imaging for acute pain", "active", True, "warning"),
    THERAPY: RuleInfo("Subacute pain", "silent", False, "info", suggests=False),
}
MALIGNANCY = "red-flag-malignancy"
DR_A, DR_B = "a" * 64, "b" * 64  # clinician pseudonyms
SNOMED = "http://snomed.info/sct"
NOT_INDICATED = {"system": SNOMED, "code": "not-indicated", "display": "Not clinically indicated"}
PATIENT_DECLINED = {"code": "patient-declined", "display": "Patient declined"}

# The report's window is [2026-11-02, 2026-11-23): three weeks, Mondays 11-02, 11-09, 11-16.
EVALUATIONS = [  # id, service, created_at (UTC), clinician pseudonym
    (10, "patient-view", "2026-11-01 23:59:59", DR_A),  # before the window
    (1, "patient-view", "2026-11-02 09:00", DR_A),
    (2, "patient-view", "2026-11-04 10:00", DR_A),
    (3, "order-sign", "2026-11-08 23:30", DR_A),  # Sunday: week of 11-02 (Monday in Auckland)
    (4, "patient-view", "2026-11-09 00:00", DR_A),
    (5, "order-sign", "2026-11-12 15:00", DR_B),
    (6, "patient-view", "2026-11-15 23:59:59", None),  # no card
    (7, "patient-view", "2026-11-16 08:00", DR_B),
    (8, "order-sign", "2026-11-20 12:00", DR_B),
    (11, "order-sign", "2026-11-23 00:00", DR_B),  # the window's end, excluded
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
FOLLOW_UPS = [  # card followed up, the later evaluation
    ("c3", 7),
    ("c5", 7),
    ("c11", 8),
    ("c2", 4),  # a silent card counts: its rule is judged before it goes live
    ("c99", 11),  # a card outside the window
]
POSSIBLE_MISSES = [  # id, card, the later evaluation, the red flag found then
    (1, "c3", 7, RED_FLAG),
    (2, "c3", 7, MALIGNANCY),  # two red flags on one card: one possible miss
    (3, "c2", 4, RED_FLAG),
    (4, "c99", 11, RED_FLAG),
]
EVIDENCE = [{"system": "ICD-10-CM", "code": "G83.4", "display": "Cauda equina", "date": None}]

# Counted by hand from the rows above (window 2026-11-02 to 2026-11-23, MODES).
EXPECTED: Report = {
    "since": "2026-11-02",
    "until": "2026-11-23",
    "linked": True,
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
            "title": "Imaging for acute pain",
            "indicator": "warning",
            "advice_only": False,
            "mode": "active",
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
            "title": "Subacute pain",
            "indicator": "info",
            "advice_only": True,
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
            "title": "Cauda equina",
            "indicator": "critical",
            "advice_only": False,
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
    "safety": {
        "window_days": 90,
        "rules": [
            {
                "rule": IMAGING,
                "title": "Imaging for acute pain",
                "followed_up": 3,  # c3, c5 and c11 (c99 is outside the window)
                "possible_misses": 1,  # c3, for two red flags
                "miss_rate": 0.333,
            },
            {
                "rule": THERAPY,
                "title": "Subacute pain",
                "followed_up": 1,
                "possible_misses": 1,
                "miss_rate": 1.0,
            },
        ],
    },
    "clinicians": {  # issued cards only; with a minimum cell of 3
        "min_cell": 3,
        "rows": [
            {  # c3 accepted (removed), c5 and c15 overridden (kept)
                "clinician": DR_A,
                "rule": IMAGING,
                "title": "Imaging for acute pain",
                "suppressed": False,
                "cards": 3,
                "accepted": 1,
                "overridden": 2,
                "ignored": 0,
                "removed_share": 0.333,
                "kept_share": 0.667,
            },
            {  # c1 accepted, c4 and c17 overridden, c7 ignored
                "clinician": DR_A,
                "rule": RED_FLAG,
                "title": "Cauda equina",
                "suppressed": False,
                "cards": 4,
                "accepted": 1,
                "overridden": 2,
                "ignored": 1,
                "removed_share": None,
                "kept_share": None,
            },
            {  # c8 overridden (at the instant of its acceptance), c11 ignored, c14 overridden
                "clinician": DR_B,
                "rule": IMAGING,
                "title": "Imaging for acute pain",
                "suppressed": False,
                "cards": 3,
                "accepted": 0,
                "overridden": 2,
                "ignored": 1,
                "removed_share": 0.0,
                "kept_share": 0.667,
            },
            {  # c10 alone: under the minimum cell
                "clinician": DR_B,
                "rule": RED_FLAG,
                "title": "Cauda equina",
                "suppressed": True,
                "cards": None,
                "accepted": None,
                "overridden": None,
                "ignored": None,
                "removed_share": None,
                "kept_share": None,
            },
        ],
    },
}


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _evaluation(
    id_: int, service: str, created_at: str, clinician: str | None = None
) -> dict[str, Any]:
    return {
        "id": id_,
        "hook_instance": f"hook-{id_}",
        "service": service,
        "ruleset_version": "0.4.0",
        "rules_fired": [],
        "duration_ms": 1.0,
        "created_at": _at(created_at),
        "clinician_key": clinician,
    }


EVALUATED = {row[0]: _evaluation(*row) for row in EVALUATIONS}


def _card(
    uuid: str, evaluation: dict[str, Any], rule: str, indicator: str, silent: bool
) -> dict[str, Any]:
    """A card row as `Store.record_evaluation` writes it, with its evaluation's columns."""
    return {
        "uuid": uuid,
        "evaluation_id": evaluation["id"],
        "rule_id": rule,
        "indicator": indicator,
        "summary": f"{rule} card",
        "silent": silent,
        "service": evaluation["service"],
        "created_at": evaluation["created_at"],
        "week": monday(evaluation["created_at"]),
        "clinician_key": evaluation["clinician_key"],
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


def _fill(store: Store) -> None:
    """The rows above, written around the store, then their cards' outcomes settled."""
    card_rows = {
        uuid: _card(uuid, EVALUATED[e], rule, indicator, silent)
        for uuid, e, rule, indicator, silent in CARDS
    }
    with store.engine.begin() as connection:
        connection.execute(evaluations.insert(), list(EVALUATED.values()))
        connection.execute(cards.insert(), list(card_rows.values()))
        connection.execute(feedback.insert(), [_feedback(*row) for row in FEEDBACK])
        connection.execute(
            follow_ups.insert(),
            [
                {
                    "card_uuid": uuid,
                    "rule_id": card_rows[uuid]["rule_id"],
                    "card_at": card_rows[uuid]["created_at"],
                    "evaluation_id": later,
                    "followed_at": EVALUATED[later]["created_at"],
                }
                for uuid, later in FOLLOW_UPS
            ],
        )
        connection.execute(
            possible_misses.insert(),
            [
                {
                    "id": id_,
                    "card_uuid": uuid,
                    "rule_id": card_rows[uuid]["rule_id"],
                    "card_at": card_rows[uuid]["created_at"],
                    "evaluation_id": later,
                    "found_at": EVALUATED[later]["created_at"],
                    "red_flag_rule": flag,
                    "evidence": EVIDENCE,
                }
                for id_, uuid, later, flag in POSSIBLE_MISSES
            ],
        )
    store.settle(card_rows)


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
    _fill(store)
    if store.engine.dialect.name == "sqlite":
        yield store.engine
        return
    auckland = sa.create_engine(
        store.engine.url, connect_args={"options": "-c timezone=Pacific/Auckland"}
    )
    yield auckland
    auckland.dispose()


def _window_report(engine: sa.Engine) -> Report:
    window = (date(2026, 11, 2), date(2026, 11, 23))
    return report(engine, *window, RULES, linked=True, window_days=90, min_cell=3)


def test_the_report_is_the_hand_count(engine: sa.Engine) -> None:
    assert _window_report(engine) == EXPECTED


def test_the_default_minimum_cell_hides_every_clinician_here(engine: sa.Engine) -> None:
    rows = report(engine, None, None, RULES)["clinicians"]["rows"]
    assert [(row["clinician"], row["rule"], row["suppressed"]) for row in rows] == [
        (DR_A, IMAGING, True),
        (DR_A, RED_FLAG, True),  # c0 (outside the window before) makes 5: still under 10
        (DR_B, IMAGING, True),
        (DR_B, RED_FLAG, True),
    ]
    assert {row["cards"] for row in rows} == {None}


def test_one_clinicians_export_names_no_other(engine: sa.Engine) -> None:
    window = (date(2026, 11, 2), date(2026, 11, 23))
    export = clinician_report(engine, *window, DR_B, RULES, min_cell=3)
    assert export["clinician"] == DR_B
    assert export["rules"] == EXPECTED["clinicians"]["rows"][2:]
    assert export["all_clinicians"] == [
        {  # DR_A's and DR_B's together: 6 imaging cards, 1 accepted, 4 overridden, 1 ignored
            "clinician": "all",
            "rule": IMAGING,
            "title": "Imaging for acute pain",
            "suppressed": False,
            "cards": 6,
            "accepted": 1,
            "overridden": 4,
            "ignored": 1,
            "removed_share": 0.167,
            "kept_share": 0.667,
        },
        {
            "clinician": "all",
            "rule": RED_FLAG,
            "title": "Cauda equina",
            "suppressed": False,
            "cards": 5,
            "accepted": 1,
            "overridden": 3,
            "ignored": 1,
            "removed_share": None,
            "kept_share": None,
        },
    ]
    assert DR_A not in json.dumps(export)
    assert DR_A not in render_clinician(export, "csv") + render_clinician(export, "table")
    assert clinician_report(engine, *window, "c" * 64, RULES)["rules"] == []


def test_the_possible_misses_for_review(engine: sa.Engine) -> None:
    cases = safety_cases(engine, date(2026, 11, 2), date(2026, 11, 23), 10, 0, RULES)
    assert [(case["card"], case["red_flag"]) for case in cases] == [
        ("c3", MALIGNANCY),  # found together: the later-stored first
        ("c3", RED_FLAG),
        ("c2", RED_FLAG),
    ]
    assert cases[2] == {
        "card": "c2",
        "rule": THERAPY,
        "title": "Subacute pain",
        "indicator": "info",
        "summary": f"{THERAPY} card",
        "card_date": "2026-11-02",
        "found_date": "2026-11-09",
        "days_later": 6,  # 09:00 on the 2nd to midnight on the 9th
        "red_flag": RED_FLAG,
        "red_flag_title": "Cauda equina",
        "evidence": EVIDENCE,
    }
    assert cases[0]["red_flag_title"] is None  # a rule the report was not told of
    paged = safety_cases(engine, None, None, limit=2, offset=1)  # c99 (found last) first
    assert [(case["card"], case["red_flag"]) for case in paged] == [
        ("c3", MALIGNANCY),
        ("c3", RED_FLAG),
    ]


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
        "linked": False,
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
        "safety": {"window_days": 90, "rules": []},
        "clinicians": {"min_cell": 10, "rows": []},
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
        evaluation = _evaluation(1, "order-sign", "2026-11-02")
        connection.execute(evaluations.insert(), [evaluation])
        connection.execute(
            cards.insert(),
            [_card(uuid, evaluation, IMAGING, "warning", False) for uuid, _ in overrides],
        )
        connection.execute(
            feedback.insert(),
            [
                _feedback(i, uuid, "overridden", "2026-11-02 01:00", {"reason": {"code": code}})
                for i, (uuid, code) in enumerate(overrides, 1)
            ],
        )
    store.settle([uuid for uuid, _ in overrides])
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
        "title": "Imaging for acute pain",
        "mode": "active",
        "indicator": "warning",
        "advice_only": "False",
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
        [IMAGING, "active", "6", "0", "1", "4", "1", "16.7%", "66.7%", "32.0"],
        [THERAPY, "silent", "0", "4", "0", "0", "0", "-", "-", "-"],
        [RED_FLAG, "active", "5", "0", "1", "3", "1", "20.0%", "60.0%", "22.5"],
    ]
    assert len({len(line) for line in [header, *rules]}) == 1  # aligned columns
    assert lines[8] == "Top override reasons"
    assert lines[9].split() == ["rule", "reason", "count"]
    assert [
        [line.split(None, 1)[0], *line.split(None, 1)[1].rsplit(None, 1)] for line in lines[10:14]
    ] == [
        [IMAGING, "Not clinically indicated", "3"],
        [IMAGING, "already-imaged", "1"],
        [RED_FLAG, FREE_TEXT, "1"],
        [RED_FLAG, "Patient declined", "1"],
    ]
    assert lines[15] == "Safety monitor: possible misses within 90 days"
    assert [line.split() for line in lines[17:19]] == [
        [IMAGING, "3", "1", "33.3%"],
        [THERAPY, "1", "1", "100.0%"],
    ]
    assert lines[20] == "Clinicians (pseudonyms; fewer than 3 cards: hidden)"
    assert [line.split() for line in lines[22:]] == [
        ["a" * 12, IMAGING, "3", "1", "2", "0", "33.3%", "66.7%"],
        ["a" * 12, RED_FLAG, "4", "1", "2", "1", "-", "-"],
        ["b" * 12, IMAGING, "3", "0", "2", "1", "0.0%", "66.7%"],
        ["b" * 12, RED_FLAG, "<min", "-", "-", "-", "-", "-"],
    ]


def test_the_table_says_when_nothing_is_linked() -> None:
    unlinked: Report = {**EXPECTED, "linked": False}
    assert (
        "(no CDS_PSEUDONYM_KEY configured: evaluations are not linked)"
        in render(unlinked, "table").splitlines()
    )


@pytest.mark.slow
def test_the_report_hashes_in_memory_on_postgresql_without_lowering_a_larger_setting(
    postgres_url: str,
) -> None:
    """Its transaction raises the server's default 4 MB of work_mem to 32 MB (a year's finest
    grouping is then hashed, not sorted on disk) and keeps a larger setting."""
    show = sa.text("SHOW work_mem")
    for options, expected in [("", "32MB"), ("-c work_mem=64MB", "64MB")]:
        engine = sa.create_engine(postgres_url, connect_args={"options": options})
        try:
            assert [tuple(row) for row in _run(engine, show)] == [(expected,)]
            with engine.connect() as connection:  # for that transaction only
                assert connection.execute(show).scalar_one() == (expected if options else "4MB")
        finally:
            engine.dispose()
