"""Summaries before the engine: a long record's readings give the cards a few would give, and
the engine sees a number of facts bounded by the rules, not by the record."""

import copy
import random
from datetime import datetime, timedelta
from typing import Any, ClassVar

import pytest

from cds_service.engine import Engine, Outcome
from cds_service.facts import FactSet, ObservationFact, build_facts
from cds_service.hooks import HOOKS
from cds_service.knowledge import Knowledge
from cds_service.models import HookRequest, dump
from cds_service.prefetch import read_context, read_record
from cds_service.summaries import SHOWN, Summaries, _test
from cds_service.triage import Triage
from tests.conftest import EXAMPLE_TODAY, load_example
from tests.synthea.convert import summarise
from tests.test_examples import rendered

FEVER = "red-flag-spinal-infection--fever-ivdu-markers"
LOINC = "http://loinc.org"
LABS = {"body-temperature": ("8310-5", "Cel"), "crp": ("1988-5", "mg/L"), "esr": ("4537-7", "mm/h")}


def reading(ident: str, concept: str, value: float, when: datetime) -> dict[str, Any]:
    code, unit = LABS[concept]
    return {
        "resource": {
            "resourceType": "Observation",
            "id": ident,
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "subject": {"reference": "Patient/pt-infection-ivdu"},
            "effectiveDateTime": f"{when.isoformat()}Z",
            "valueQuantity": {"value": value, "unit": unit, "code": unit},
        }
    }


def with_readings(readings: list[dict[str, Any]]) -> dict[str, Any]:
    """The fever example with its temperature replaced by `readings` (its CRP and ESR kept)."""
    request, _ = load_example(FEVER)
    request = copy.deepcopy(request)
    entries = request["prefetch"]["observations"]["entry"]
    kept = [e for e in entries if e["resource"]["code"]["coding"][0]["code"] != "8310-5"]
    request["prefetch"]["observations"]["entry"] = kept + readings
    return request


def temperatures(count: int, seed: int) -> list[dict[str, Any]]:
    """`count` temperatures, one every few minutes over the last two weeks, 36.0 to 39.4 Cel."""
    rng = random.Random(seed)
    start = datetime(EXAMPLE_TODAY.year, EXAMPLE_TODAY.month, EXAMPLE_TODAY.day)
    return [
        reading(
            f"t{i}",
            "body-temperature",
            round(rng.uniform(36.0, 39.4), 1),
            start - timedelta(minutes=5 * (count - i)),
        )
        for i in range(count)
    ]


class Recording(Engine):
    """The triage's engine, remembering how many facts each evaluation was given."""

    given: ClassVar[list[int]] = []

    def evaluate(self, facts: list[Any]) -> Outcome:
        Recording.given.append(len(facts))
        return super().evaluate(facts)


def cards(triage: Triage, request: dict[str, Any]) -> list[dict[str, Any]]:
    body = HookRequest.model_validate(request)
    result: list[dict[str, Any]] = dump(triage.evaluate(body, "patient-view", EXAMPLE_TODAY))[
        "cards"
    ]
    return result


def test_thousands_of_readings_give_the_cards_of_their_extremes(
    knowledge: Knowledge, monkeypatch: pytest.MonkeyPatch
) -> None:
    triage = Triage(knowledge)
    monkeypatch.setattr(triage.engines["patient-view"], "__class__", Recording)
    many = temperatures(3000, seed=1)
    fever = knowledge.threshold("fever_celsius")
    fevers = [r for r in many if r["resource"]["valueQuantity"]["value"] >= fever]

    def value(entry: dict[str, Any]) -> float:
        return float(entry["resource"]["valueQuantity"]["value"])

    # the (first) highest, the (first) lowest and the latest of the readings the fever rule counts
    extremes = [max(fevers, key=value), min(fevers, key=value), fevers[-1]]
    assert len({id(entry) for entry in extremes}) == 3

    Recording.given.clear()
    long_cards, short_cards = (
        cards(triage, with_readings(many)),
        cards(triage, with_readings(extremes)),
    )

    assert [summarise(c) for c in long_cards] == [summarise(c) for c in short_cards] != []
    assert Recording.given[0] == Recording.given[1], "the engine saw more facts for more readings"
    highest = extremes[0]["resource"]["valueQuantity"]["value"]
    assert (
        f"{highest} Cel; the highest of {len(fevers):,} readings that meet the same rules"
        in rendered(long_cards[0]["detail"])
    )


def test_readings_no_rule_can_match_are_not_given_to_the_engine(
    knowledge: Knowledge, monkeypatch: pytest.MonkeyPatch
) -> None:
    triage = Triage(knowledge)
    monkeypatch.setattr(triage.engines["patient-view"], "__class__", Recording)
    normal = [
        r for r in temperatures(2000, seed=2) if r["resource"]["valueQuantity"]["value"] < 37.5
    ]
    Recording.given.clear()
    cards(triage, with_readings(normal[:1]))
    cards(triage, with_readings(normal))
    assert Recording.given[0] == Recording.given[1]


def outcome_ids(outcome: Outcome) -> tuple[dict[str, frozenset[str]], dict[str, frozenset[str]]]:
    return {f.rule_id: f.fact_ids for f in outcome.firings}, outcome.derived


@pytest.mark.parametrize("seed", range(8))
def test_the_engine_answers_as_if_it_had_seen_every_reading(
    knowledge: Knowledge, triage: Triage, seed: int
) -> None:
    """Up to `SHOWN` readings a class, the expanded outcome is the one of all the facts."""
    rng = random.Random(seed)
    start = datetime(EXAMPLE_TODAY.year, EXAMPLE_TODAY.month, EXAMPLE_TODAY.day)
    ranges = {"body-temperature": (36.0, 39.5), "crp": (1, 60), "esr": (2, 50)}
    readings = [
        reading(
            f"r{i}", concept, round(rng.uniform(*ranges[concept]), 1), start - timedelta(hours=i)
        )
        for i, concept in enumerate(rng.choice(list(LABS)) for _ in range(rng.randint(1, SHOWN)))
    ]
    request = HookRequest.model_validate(with_readings(readings))
    context = read_context(request, HOOKS["patient-view"].context)
    record = read_record(request, context, triage.queries, triage.reader(EXAMPLE_TODAY))
    facts = build_facts(record, knowledge, EXAMPLE_TODAY)
    engine = triage.engines["patient-view"]

    everything = engine.evaluate(facts.facts)
    summary = Summaries(knowledge, knowledge.rules.values()).summarise(facts)

    assert outcome_ids(summary.expand(engine.evaluate(summary.facts))) == outcome_ids(everything)


def test_each_class_keeps_as_many_readings_as_one_rule_can_match(knowledge: Knowledge) -> None:
    """A rule with two clauses on one concept needs two distinct readings of one class."""
    rule = next(r for r in knowledge.rules.values() if r.id == "derive-fever")
    (clause,) = next(a for a in rule.match if a[0].kind == "observation")
    twice = rule.model_copy(update={"match": [[clause, clause]]})
    summaries = Summaries(knowledge, [twice])
    facts = FactSet()
    for value in (38.5, 39.0, 39.5):
        facts.add(
            ObservationFact(
                id=facts.next_id(), type="observation", concept="body-temperature", value=value
            ),
            [],
        )

    assert summaries.per_class == 2
    assert [f["id"] for f in summaries.summarise(facts).facts] == ["f0", "f1"]


def test_an_operator_summaries_cannot_evaluate_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\$regex"):
        _test({"$regex": {"concept": "x"}})
    assert _test({"$lt": {"value": 3}})(
        ObservationFact(id="f0", type="observation", concept="x", value=2)
    )
    assert not _test({"$lt": {"value": 3}})(
        ObservationFact(id="f0", type="observation", concept="x")
    )
