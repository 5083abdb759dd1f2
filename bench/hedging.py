"""How often the cards hedge on real-shaped data, and why (docs/rules.md, "Reassure only what was
understood").

Runs the Synthea corpus (fhir_examples/synthea/) twice: as recorded (each patient on its source's
date), and with every back-pain patient's back pain made acute (its back-pain Conditions recoded
M54.50 and started ten days before), which is when the reassuring primary-care card can fire. For
each run it counts the reassuring cards, the serious-cause-risk cards that took their place (by
risk block), and the active Conditions listed as not judged (the most frequent codes).

    python -m bench.hedging
"""

import copy
from collections import Counter
from datetime import date, timedelta
from typing import Any

from cds_service.knowledge import load_knowledge
from cds_service.models import HookRequest, dump
from cds_service.triage import Triage
from tests.conftest import EXAMPLES
from tests.synthea.convert import is_back_pain, load_corpus, load_request, patient_date

CORPUS_DIR = EXAMPLES / "synthea"


ACUTE = {
    "coding": [
        {
            "system": "http://hl7.org/fhir/sid/icd-10-cm",
            "code": "M54.50",
            "display": "Low back pain, unspecified",
        }
    ]
}


def _made_acute(request: dict[str, Any], today: date) -> dict[str, Any]:
    """`request` with its back-pain Conditions made acute low back pain (M54.50) that started
    ten days before `today`."""
    request = copy.deepcopy(request)
    onset = (today - timedelta(days=10)).isoformat()
    for entry in request["prefetch"]["conditions"].get("entry", []):
        condition = entry["resource"]
        if is_back_pain(condition):
            for key in ("onsetPeriod", "onsetAge", "abatementDateTime", "abatementPeriod"):
                condition.pop(key, None)
            condition["onsetDateTime"] = onset
            condition["code"] = ACUTE
            condition["clinicalStatus"] = {"coding": [{"code": "active"}]}
    return request


def _run(triage: Triage, acute: bool) -> dict[str, Any]:
    corpus = load_corpus(CORPUS_DIR)
    reassuring = {r.id for r in triage.knowledge.rules.values() if r.card and r.card.reassures}
    counts: Counter[str] = Counter()
    risks: Counter[str] = Counter()
    unjudged: Counter[str] = Counter()
    for patient in corpus["patients"]:
        if acute and not patient["back_pain"]:
            continue
        today = patient_date(corpus, patient)
        request = load_request(CORPUS_DIR, patient["id"])
        request = _made_acute(request, today) if acute else request
        cards = dump(triage.evaluate(HookRequest.model_validate(request), "patient-view", today))
        for card in cards["cards"]:
            rule = card["extension"]["org.spine-cds.rule"]["id"]
            counts[rule] += 1
            if rule == "serious-cause-risk":
                risks.update(_risk_blocks(triage, card["detail"]))
            if rule in reassuring:
                counts["reassuring, listing entries not judged"] += "Not judged" in card["detail"]
                unjudged.update(_listed(card["detail"]))
        counts["patients"] += 1
    return {"counts": counts, "risks": risks, "unjudged": unjudged}


def _risk_blocks(triage: Triage, detail: str) -> list[str]:
    titles = {vs.risk.means: c for c, vs in triage.knowledge.value_sets.items() if vs.risk}
    plain = detail.replace("\\", "")
    return sorted({concept for means, concept in titles.items() if means in plain})


def _listed(detail: str) -> list[str]:
    plain = detail.replace("\\", "")
    if "Not judged by this rule set" not in plain:
        return []
    shown = plain.split("bears on this back pain): ", 1)[1].split(".\n", 1)[0]
    return [item.split(",")[0] for item in shown.split("; ")]


def main() -> None:
    triage = Triage(load_knowledge())
    for acute in (False, True):
        result = _run(triage, acute)
        label = "back pain made acute (M54.50, ten days old)" if acute else "as recorded"
        counts = result["counts"]
        print(f"## Corpus {label}: {counts.pop('patients')} patients")
        for rule, count in counts.most_common():
            print(f"- {rule}: {count}")
        print("  serious-cause-risk by risk block:", dict(result["risks"].most_common()))
        print("  most frequent entries not judged:", result["unjudged"].most_common(25))
        print()


if __name__ == "__main__":
    main()
