"""Every request in fhir_examples/ gives the cards its expectation file describes."""

import re
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_service import examples
from cds_service.app import create_app
from cds_service.models import HookRequest, dump
from cds_service.triage import Triage, today_utc
from tests.conftest import EXAMPLE_TODAY, app_settings, example_names, load_example
from tests.synthea.convert import summarise


def rendered(detail: str) -> str:
    """The detail as a Markdown renderer shows it: record text has its punctuation escaped."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", detail)


def _expected(card: dict[str, Any], triage: Triage) -> dict[str, Any]:
    summary: dict[str, Any] = {
        k: card[k] for k in ("rule", "indicator", "reasons", "actions") if k in card
    }
    nucc = {key: s.nucc.code for key, s in triage.knowledge.specialties.items()}
    if "specialty" in card:
        summary["specialty_nucc"] = nucc[card["specialty"]]
        summary["priority"] = card["priority"]
    if "or" in card:
        summary["or"] = [nucc[key] for key in card["or"]]
    return summary


DAYS = {
    "as-written": EXAMPLE_TODAY,
    "today": today_utc(),
    "a-year-from-now": today_utc() + timedelta(days=365),
    "leap-day": date(2028, 2, 29),
}
"""Examples are rebased to the evaluation date when loaded: their cards never age."""


@pytest.mark.parametrize("day", DAYS.values(), ids=DAYS.keys())
@pytest.mark.parametrize("name", example_names())
def test_example_gives_expected_cards(name: str, day: date, triage: Triage) -> None:
    request, expected = load_example(name, day)
    assert expected["today"] == EXAMPLE_TODAY.isoformat()
    body = HookRequest.model_validate(request)
    cards = dump(triage.evaluate(body, request["hook"], day))["cards"]

    assert [summarise(c) for c in cards] == [_expected(c, triage) for c in expected["cards"]]
    for card, wanted in zip(cards, expected["cards"], strict=True):
        for text in examples.shift(wanted["mentions"], (day - EXAMPLE_TODAY).days):
            assert text in rendered(card["detail"]), f"{text!r} missing from the card detail"


def without_uuids(value: Any) -> Any:
    """`value` with every `uuid` member blanked (they are random per response)."""
    if isinstance(value, dict):
        blank = ("uuid", "appContext")  # appContext is the card's uuid
        return {k: "<uuid>" if k in blank else without_uuids(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_uuids(v) for v in value]
    return value


@pytest.mark.parametrize("name", example_names())
def test_example_over_http_matches_in_process(
    name: str, client: TestClient, triage: Triage
) -> None:
    request, _ = load_example(name)
    response = client.post(f"/cds-services/{request['hook']}", json=request)
    assert response.status_code == 200, response.text
    body = HookRequest.model_validate(request)
    review = "http://testserver/review"  # the app links referral cards to its review page
    in_process = dump(triage.evaluate(body, request["hook"], EXAMPLE_TODAY, review))
    assert without_uuids(response.json()) == without_uuids(in_process)


def _expected_cards() -> list[dict[str, Any]]:
    return [card for name in example_names() for card in load_example(name)[1]["cards"]]


def test_every_card_rule_has_three_named_examples(triage: Triage) -> None:
    named = [name.split("--")[0] for name in example_names()]
    for rule in triage.knowledge.rules.values():
        if rule.card is not None:
            assert named.count(rule.id) >= 3, f"{rule.id} needs in, out and edge examples"


def test_every_specialty_is_reached_by_an_example(triage: Triage) -> None:
    reached = {c.get("specialty") for c in _expected_cards()} | {
        key for c in _expected_cards() for key in c.get("or", [])
    }
    if any(c["rule"] == "primary-care-acute-nonspecific" for c in _expected_cards()):
        reached.add("primary-care")  # primary care is advice, not a referral
    assert set(triage.knowledge.specialties) <= reached


def test_every_red_flag_escalates_as_critical_and_urgent(triage: Triage) -> None:
    red_flags = [r for r in triage.knowledge.rules.values() if "red-flag" in r.derive and r.card]
    assert len(red_flags) >= 10
    for rule in red_flags:
        assert rule.card is not None
        assert rule.card.indicator == "critical", rule.id
        assert rule.card.refer is not None
        assert rule.card.refer.priority in ("stat", "urgent"), rule.id
    fired = {c["rule"] for c in _expected_cards()}
    assert {r.id for r in red_flags} <= fired


A_YEAR_FROM_NOW = DAYS["a-year-from-now"]


@pytest.fixture(scope="module")
def next_year() -> Iterator[TestClient]:
    """The try-it app a year from now."""
    with TestClient(create_app(app_settings(today=A_YEAR_FROM_NOW))) as test_client:
        yield test_client


@pytest.mark.parametrize("name", example_names())
def test_the_playground_example_gives_its_cards_a_year_from_now(
    name: str, next_year: TestClient, triage: Triage
) -> None:
    served = next_year.get(f"/playground/examples/{name}")
    assert served.status_code == 200
    assert served.json() == load_example(name, A_YEAR_FROM_NOW)[0]
    response = next_year.post(f"/cds-services/{served.json()['hook']}", json=served.json())
    assert response.status_code == 200, response.text
    _, expected = load_example(name)
    cards = response.json()["cards"]
    assert [summarise(c) for c in cards] == [_expected(c, triage) for c in expected["cards"]]


def test_rebasing_moves_full_dates_and_date_times_only() -> None:
    written = {
        "birthDate": "1974-03-02",
        "onsetDateTime": "2026-10-31T08:15:00+02:00",
        "lastUpdated": "2026-10-31T23:59:59.5Z",
        "recorded": ["2026-02-28"],
        "year": "2014",
        "month": "2014-05",
        "rxnorm": "5640",
        "impossible": "2026-02-30",
        "text": "seen on 2026-10-31",
    }
    assert examples.shift(written, 366) == {
        **written,
        "birthDate": "1975-03-03",
        "onsetDateTime": "2027-11-01T08:15:00+02:00",
        "lastUpdated": "2027-11-01T23:59:59.5Z",
        "recorded": ["2027-03-01"],
    }


def test_a_folder_without_an_anchor_is_served_as_written(tmp_path: Path) -> None:
    (tmp_path / "case.json").write_text('{"onsetDateTime": "2020-01-01"}')
    assert examples.load(tmp_path / "case.json", A_YEAR_FROM_NOW) == {"onsetDateTime": "2020-01-01"}
