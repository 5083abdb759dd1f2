"""The durable-rules engine: isolated sessions, no leaks, no mixing of patients under threads."""

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from cds_service.engine import Engine, compile_ruleset
from cds_service.facts import Fact, FindingFact, ObservationFact
from cds_service.knowledge import Knowledge
from cds_service.models import HookRequest, dump
from cds_service.triage import Triage
from tests.conftest import EXAMPLE_TODAY, example_names, load_example
from tests.test_examples import without_uuids

THREADS = 16
PER_THREAD = 500


def _as_patient(request: dict[str, Any], patient_id: str) -> dict[str, Any]:
    """The same request about another patient: every reference to the patient is rewritten."""
    old = request["context"]["patientId"]
    text = json.dumps(request).replace(f'"Patient/{old}"', f'"Patient/{patient_id}"')
    text = text.replace(f'"patientId": "{old}"', f'"patientId": "{patient_id}"')
    text = text.replace(f'"id": "{old}"', f'"id": "{patient_id}"')
    renamed: dict[str, Any] = json.loads(text)
    return renamed


def _evaluate(triage: Triage, request: dict[str, Any]) -> Any:
    body = HookRequest.model_validate(request)
    return without_uuids(dump(triage.evaluate(body, request["hook"], EXAMPLE_TODAY)))


@pytest.mark.slow  # 16 threads, 8,000 evaluations: ~20 s
def test_concurrent_evaluations_match_sequential_ones(triage: Triage) -> None:
    templates = [load_example(name)[0] for name in example_names()]
    requests = [
        _as_patient(templates[i % len(templates)], f"p{i}") for i in range(THREADS * PER_THREAD)
    ]
    sequential = [_evaluate(triage, r) for r in requests]

    def worker(thread: int) -> list[Any]:
        chunk = range(thread * PER_THREAD, (thread + 1) * PER_THREAD)
        return [_evaluate(triage, requests[i]) for i in chunk]

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        concurrent = [result for chunk in pool.map(worker, range(THREADS)) for result in chunk]

    assert concurrent == sequential
    referrals = [
        (i, action["resource"]["subject"]["reference"])
        for i, response in enumerate(concurrent)
        for card in response["cards"]
        for suggestion in card.get("suggestions", [])
        for action in suggestion["actions"]
        if action["type"] == "create"
    ]
    assert len(referrals) > THREADS * PER_THREAD / 4, "the workload must include referrals"
    assert all(subject == f"Patient/p{i}" for i, subject in referrals)


def test_sessions_are_deleted_past_the_engine_limit(knowledge: Knowledge) -> None:
    """durable-rules allows 1,024 live sessions per ruleset; 3,000 evaluations need deletion."""
    engine = Engine(knowledge, knowledge.rules.values(), "limit-test")
    facts: list[Fact] = [FindingFact(id="f0", type="finding", concept="cauda-equina", new=True)]
    for _ in range(3000):
        outcome = engine.evaluate(facts)
        assert [f.rule_id for f in outcome.firings] == ["red-flag-cauda-equina"]


def test_evaluation_that_fires_nothing_survives(knowledge: Knowledge) -> None:
    engine = Engine(knowledge, knowledge.rules.values(), "empty-test")
    nothing: list[list[Fact]] = [[], [FindingFact(id="f0", type="finding", concept="x", new=True)]]
    for facts in nothing:
        outcome = engine.evaluate(facts)
        assert outcome.firings == []
        assert outcome.derived == {}


def test_forward_chaining_derives_facts_for_later_rules(knowledge: Knowledge) -> None:
    engine = Engine(knowledge, knowledge.rules.values(), "chain-test")
    facts: list[Fact] = [
        FindingFact(id="f0", type="finding", concept="back-pain", new=False),
        ObservationFact(id="f1", type="observation", concept="body-temperature", value=38.6),
        FindingFact(id="f2", type="finding", concept="iv-drug-use", new=False),
    ]
    outcome = engine.evaluate(facts)
    fired = {f.rule_id for f in outcome.firings}
    assert {"derive-fever", "red-flag-spinal-infection"} <= fired
    assert outcome.derived["derived:fever"] == frozenset({"f1"})
    assert outcome.holds("red-flag")


def test_thresholds_come_from_config(knowledge: Knowledge) -> None:
    ruleset = compile_ruleset(knowledge, [knowledge.rules["derive-fever"]])
    pattern = ruleset["derive-fever#1"]["all"][0]["m_0"]["$and"]
    assert {"$gte": {"value": knowledge.config.thresholds["fever_celsius"]}} in pattern
