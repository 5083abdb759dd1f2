"""Reassure only what was understood: no billable code of a risk block meets a reassuring card.

Every billable code under every risk value set's roots (from the CMS tabular, not hand-picked),
as an active, confirmed Condition beside ten days of low back pain in a 58-year-old, gives a card
that names it (a red flag, or the serious-cause-risk card), and no card says "no red flag".
"""

import importlib
import warnings
from collections.abc import Iterator
from datetime import date
from types import ModuleType
from typing import Any

import pytest

from cds_service.knowledge import Knowledge
from cds_service.models import HookRequest, dump
from cds_service.triage import Triage
from tests.conftest import EXAMPLE_TODAY
from tests.test_examples import rendered

pytestmark = pytest.mark.slow  # reads the whole ICD-10-CM tabular

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
TODAY = date(2026, 11, 1)
ACTIVE = {"coding": [{"code": "active"}]}
CONFIRMED = {"coding": [{"code": "confirmed"}]}


@pytest.fixture(scope="module")
def icd() -> ModuleType:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return importlib.import_module("simple_icd_10_cm")


def _billable(icd: ModuleType, knowledge: Knowledge) -> Iterator[tuple[str, str]]:
    """(risk concept, billable code) for every code under each risk set's roots."""
    for concept, value_set in sorted(knowledge.value_sets.items()):
        if value_set.risk is None or concept in knowledge.config.episode_concepts:
            continue  # thoracic back pain is the pain itself, not an entry beside it
        for root in value_set.codes:
            if root.system != "icd-10-cm":
                continue
            subtree = icd.get_descendants(root.code) if root.descendants else []
            for code in [root.code, *subtree]:
                if icd.is_leaf(code) and not icd.is_chapter_or_block(code):
                    yield concept, code


def _request(code: str) -> dict[str, Any]:
    def condition(cid: str, code: str, onset: str) -> dict[str, Any]:
        return {
            "resource": {
                "resourceType": "Condition",
                "id": cid,
                "clinicalStatus": ACTIVE,
                "verificationStatus": CONFIRMED,
                "code": {"coding": [{"system": ICD10CM, "code": code}]},
                "subject": {"reference": "Patient/p"},
                "onsetDateTime": onset,
            }
        }

    return {
        "hook": "patient-view",
        "hookInstance": "risk-sweep",
        "context": {"patientId": "p", "userId": "Practitioner/x"},
        "prefetch": {
            "patient": {"resourceType": "Patient", "id": "p", "birthDate": "1968-05-14"},
            "conditions": {
                "resourceType": "Bundle",
                "entry": [
                    condition("c1", "M54.50", "2026-10-22"),
                    condition("c2", code, "2026-09-01"),
                ],
            },
            "observations": {"resourceType": "Bundle", "entry": []},
        },
    }


def test_no_billable_risk_code_meets_a_reassuring_card(
    icd: ModuleType, knowledge: Knowledge, triage: Triage
) -> None:
    reassuring = {rule.id for rule in knowledge.rules.values() if rule.card and rule.card.reassures}
    codes = list(_billable(icd, knowledge))
    coded = {
        c
        for c, vs in knowledge.value_sets.items()
        if vs.risk and vs.codes and c not in knowledge.config.episode_concepts
    }
    assert {concept for concept, _ in codes} == coded  # a risk found in text has no codes
    wrong: list[str] = []
    for concept, code in codes:
        body = HookRequest.model_validate(_request(code))
        cards = dump(triage.evaluate(body, "patient-view", EXAMPLE_TODAY))["cards"]
        rules = [card["extension"]["org.spine-cds.rule"]["id"] for card in cards]
        says = " ".join(card["summary"] + card["detail"] for card in cards).lower()
        named = any(
            code in rendered(card["detail"]) for card in cards if card["indicator"] != "info"
        )
        if reassuring & set(rules) or "no red flag" in says or not named:
            wrong.append(f"{concept} {code}: {rules}")
    assert wrong == [], f"{len(wrong)} of {len(codes)} codes: {wrong[:20]}"
    assert len(codes) > 1000  # the sweep is not vacuous
