"""Blind clinical cases: requests and expectations written from the guidelines, without the rules.

Each `tests/blind/cases/*.json` is a CDS Hooks request with a `blind` member (see
tests/blind/README.md) holding the evaluation date and a contract-level expectation. A case the
service fails today carries `blind.xfail` and runs as a strict xfail, so the suite turns red
when a fix lands and the marker is due to go.
"""

import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from cds_service.models import HookRequest, dump
from cds_service.triage import Triage

CASES = Path(__file__).resolve().parent / "blind" / "cases"
NO_RED_FLAG = re.compile(r"\bno red[- ]flags?\b", re.IGNORECASE)
EXPECTATIONS = {
    "critical",
    "critical_refer_any_of",
    "refer_any_of",
    "no_refer_to",
    "must_not_reassure",
    "delete_imaging",
    "indicators_include",
    "detail_mentions_any",
}


def _params() -> list[Any]:
    params = []
    for path in sorted(CASES.glob("*.json")):
        reason = json.loads(path.read_text())["blind"].get("xfail")
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(path.stem, marks=marks, id=path.stem))
    return params


def _referrals(card: dict[str, Any]) -> list[tuple[str, str]]:
    """(NUCC performerType, priority) of every ServiceRequest the card suggests creating."""
    found = []
    for suggestion in card.get("suggestions", []):
        for action in suggestion.get("actions", []):
            resource = action.get("resource", {})
            if action["type"] == "create" and resource.get("resourceType") == "ServiceRequest":
                for coding in resource.get("performerType", {}).get("coding", []):
                    found.append((coding["code"], resource.get("priority", "routine")))
    return found


def _deletes(card: dict[str, Any]) -> bool:
    actions = [a for s in card.get("suggestions", []) for a in s.get("actions", [])]
    return any(a["type"] == "delete" for a in actions)


def _matches(referrals: list[tuple[str, str]], wanted: list[dict[str, Any]]) -> bool:
    return any(
        code == w["nucc"] and priority in w["priority"]
        for code, priority in referrals
        for w in wanted
    )


def _reassuring(card: dict[str, Any]) -> bool:
    """An info card, a suggestion to drop imaging, or text saying there is no red flag."""
    text = f"{card['summary']}\n{card.get('detail', '')}"
    return card["indicator"] == "info" or _deletes(card) or bool(NO_RED_FLAG.search(text))


def unmet(expect: dict[str, Any], cards: list[dict[str, Any]]) -> list[str]:
    """The expectations `cards` do not meet, each as a sentence."""
    assert set(expect) <= EXPECTATIONS, f"unknown expectation {set(expect) - EXPECTATIONS}"
    critical = [c for c in cards if c["indicator"] == "critical"]
    everything = [r for c in cards for r in _referrals(c)]
    problems = []
    if "critical" in expect and bool(critical) != expect["critical"]:
        problems.append(f"expected a critical card: {expect['critical']}")
    wanted = expect.get("critical_refer_any_of")
    if wanted and not _matches([r for c in critical for r in _referrals(c)], wanted):
        problems.append(f"no critical card refers to any of {wanted}")
    wanted = expect.get("refer_any_of")
    if wanted and not _matches(everything, wanted):
        problems.append(f"no card refers to any of {wanted}")
    forbidden = [r for r in everything if r[0] in expect.get("no_refer_to", [])]
    if forbidden:
        problems.append(f"referral suggested that must not be: {forbidden}")
    if expect.get("must_not_reassure") and any(_reassuring(c) for c in cards):
        problems.append("a card reassures (info, imaging removal or 'no red flag')")
    if "delete_imaging" in expect and any(map(_deletes, cards)) != expect["delete_imaging"]:
        problems.append(f"expected a suggestion to remove the imaging: {expect['delete_imaging']}")
    missing = set(expect.get("indicators_include", [])) - {c["indicator"] for c in cards}
    if missing:
        problems.append(f"no card with indicator {sorted(missing)}")
    words = expect.get("detail_mentions_any", [])
    text = " ".join(f"{c['summary']} {c.get('detail', '')}" for c in cards).lower()
    if words and not any(w.lower() in text for w in words):
        problems.append(f"no card mentions any of {words}")
    return problems


def _answer(cards: list[dict[str, Any]]) -> str:
    lines = [f"  {c['indicator']}: {c['summary']} {_referrals(c) or ''}" for c in cards]
    return "\n".join(lines) or "  (no cards)"


@pytest.mark.parametrize("name", _params())
def test_blind_case_meets_expectation(name: str, triage: Triage) -> None:
    request = json.loads((CASES / f"{name}.json").read_text())
    blind = request.pop("blind")
    today = date.fromisoformat(blind["today"])
    body = HookRequest.model_validate(request)
    cards = dump(triage.evaluate(body, request["hook"], today))["cards"]
    problems = unmet(blind["expect"], cards)
    assert not problems, (
        f"{blind['rationale']}\n" + "\n".join(problems) + "\nanswer:\n" + _answer(cards)
    )


@pytest.mark.parametrize("name", [p.stem for p in sorted(CASES.glob("*.json"))])
def test_blind_case_is_documented(name: str) -> None:
    blind = json.loads((CASES / f"{name}.json").read_text())["blind"]
    assert {"today", "class", "guideline", "rationale", "expect"} <= set(blind), name
    assert name.startswith(f"{blind['class']}--"), "the file name starts with the case's class"
    assert "http" in blind["guideline"], "the guideline is cited with its URL"


def test_checker_catches_reassurance_and_wrong_referrals() -> None:
    info = {"indicator": "info", "summary": "Acute low back pain, no red flag found"}
    routine = {
        "indicator": "critical",
        "summary": "Refer",
        "suggestions": [
            {
                "actions": [
                    {
                        "type": "create",
                        "resource": {
                            "resourceType": "ServiceRequest",
                            "priority": "routine",
                            "performerType": {"coding": [{"code": "207P00000X"}]},
                        },
                    }
                ]
            }
        ],
    }
    stat = [{"nucc": "207P00000X", "priority": ["stat"]}]
    assert unmet({"critical": True, "must_not_reassure": True}, [info]) == [
        "expected a critical card: True",
        "a card reassures (info, imaging removal or 'no red flag')",
    ]
    assert unmet({"critical_refer_any_of": stat}, [routine]) == [
        f"no critical card refers to any of {stat}"
    ]
    assert unmet({"no_refer_to": ["207P00000X"]}, [routine]) == [
        "referral suggested that must not be: [('207P00000X', 'routine')]"
    ]
    assert unmet({"critical": False, "delete_imaging": False}, [info]) == []
