"""Every request in fhir_examples/ gives the cards its expectation file describes."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_service.models import HookRequest, dump
from cds_service.service import Triage
from tests.conftest import EXAMPLE_TODAY, example_names, load_example


def _summarise(card: dict[str, Any]) -> dict[str, Any]:
    """The parts of a card an expectation pins down."""
    summary: dict[str, Any] = {
        "rule": card["extension"]["org.spine-cds.rule"]["id"],
        "indicator": card["indicator"],
    }
    actions = [a for s in card.get("suggestions", []) for a in s["actions"]]
    creates = [a["resource"] for a in actions if a["type"] == "create"]
    if creates:
        first, *others = creates
        summary["specialty_nucc"] = first["performerType"]["coding"][0]["code"]
        summary["priority"] = first["priority"]
        summary["reasons"] = [r["reference"] for r in first.get("reasonReference", [])]
        if others:
            summary["or"] = [r["performerType"]["coding"][0]["code"] for r in others]
    else:
        summary["reasons"] = []
    deletes = [f"delete {a['resourceId']}" for a in actions if a["type"] == "delete"]
    if deletes:
        summary["actions"] = deletes
    return summary


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


@pytest.mark.parametrize("name", example_names())
def test_example_gives_expected_cards(name: str, triage: Triage) -> None:
    request, expected = load_example(name)
    assert expected["today"] == EXAMPLE_TODAY.isoformat()
    body = HookRequest.model_validate(request)
    cards = dump(triage.evaluate(body, request["hook"], EXAMPLE_TODAY))["cards"]

    assert [_summarise(c) for c in cards] == [_expected(c, triage) for c in expected["cards"]]
    for card, wanted in zip(cards, expected["cards"], strict=True):
        for text in wanted["mentions"]:
            assert text in card["detail"], f"{text!r} missing from the card detail"


def without_uuids(value: Any) -> Any:
    """`value` with every `uuid` member blanked (they are random per response)."""
    if isinstance(value, dict):
        return {k: "<uuid>" if k == "uuid" else without_uuids(v) for k, v in value.items()}
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
    in_process = dump(triage.evaluate(body, request["hook"], EXAMPLE_TODAY))
    assert without_uuids(response.json()) == without_uuids(in_process)
