"""Demo traffic against the real app in a real uvicorn server on loopback, checked in its store."""

from typing import Any

import pytest
import sqlalchemy as sa

from cds_service import storage
from cds_service.demo import DemoSummary, format_summary, run
from tests.conftest import EXAMPLE_TODAY, EXAMPLES, app_settings
from tests.loopback import serving

pytestmark = pytest.mark.slow


def _demo(rounds: int = 1) -> tuple[DemoSummary, dict[str, list[dict[str, Any]]]]:
    """Run the demo against a fresh service; its summary and the rows it left in the store."""
    settings = app_settings()
    with serving(settings) as url:
        summary = run(url, EXAMPLES, EXAMPLE_TODAY, rounds=rounds, seed=7)
    engine = sa.create_engine(settings.database_url)
    with engine.connect() as connection:
        rows = {
            table.name: [dict(row._mapping) for row in connection.execute(sa.select(table))]
            for table in (storage.evaluations, storage.cards, storage.feedback)
        }
    engine.dispose()
    return summary, rows


@pytest.fixture(scope="module")
def first() -> tuple[DemoSummary, dict[str, list[dict[str, Any]]]]:
    return _demo()


def test_every_example_is_audited_as_a_new_evaluation(
    first: tuple[DemoSummary, dict[str, list[dict[str, Any]]]],
) -> None:
    summary, rows = first
    examples = len(list(EXAMPLES.glob("*.json")))
    assert summary.errors == ()
    assert summary.requests == examples
    assert len(rows["evaluations"]) == examples
    assert len({row["hook_instance"] for row in rows["evaluations"]}) == examples
    assert summary.cards == len(rows["cards"])
    assert summary.accepted + summary.overridden + summary.ignored == summary.cards


def test_feedback_rows_are_the_accepted_and_overridden_cards(
    first: tuple[DemoSummary, dict[str, list[dict[str, Any]]]],
) -> None:
    summary, rows = first
    outcomes = [row["outcome"] for row in rows["feedback"]]
    assert outcomes.count("accepted") == summary.accepted > 0
    assert outcomes.count("overridden") == summary.overridden > 0
    assert len(outcomes) == summary.accepted + summary.overridden
    assert summary.ignored > 0


def test_feedback_uses_what_each_card_offered(
    first: tuple[DemoSummary, dict[str, list[dict[str, Any]]]],
) -> None:
    _, rows = first
    cards = {row["uuid"]: row["content"] for row in rows["cards"]}
    reasons = 0
    for row in rows["feedback"]:
        card = cards[row["card_uuid"]]
        if row["outcome"] == "accepted":
            assert row["accepted_suggestions"] == [{"id": card["suggestions"][0]["uuid"]}]
            continue
        override = row["override_reason"]
        assert override
        if "reason" in override:
            offered = {coding["code"] for coding in card["overrideReasons"]}
            assert override["reason"]["code"] in offered
            reasons += 1
    assert reasons > 0


def test_same_seed_gives_the_same_summary_on_a_fresh_service(
    first: tuple[DemoSummary, dict[str, list[dict[str, Any]]]],
) -> None:
    again, _ = _demo()
    assert again == first[0]


def test_format_summary_counts_repeated_errors_once() -> None:
    summary = DemoSummary(
        requests=3,
        cards=2,
        accepted=1,
        overridden=0,
        ignored=1,
        errors=(
            "POST /cds-services/order-sign: HTTP 401",
            "POST /cds-services/order-sign: HTTP 401",
            "POST /cds-services/patient-view/feedback: HTTP 400",
        ),
    )
    assert format_summary(summary) == (
        "3 requests, 2 cards: 1 accepted, 0 overridden, 1 ignored; 3 errors\n"
        "  2 x POST /cds-services/order-sign: HTTP 401\n"
        "  1 x POST /cds-services/patient-view/feedback: HTTP 400"
    )
