"""Summaries before the engine: a record's readings collapsed to what the rules can tell apart.

Every pattern the engine compiles on an observation fact tests that one fact: its concept, a
`positive` flag, a `value` compared with thresholds. Readings on which every such pattern gives
the same answer are interchangeable for the engine (a class), and it needs only as many of a
class as one rule alternative has observation patterns (durable-rules never matches one fact to
two patterns of a rule). A reading no pattern matches can fire nothing and is left out. So the
engine sees a number of observation facts bounded by the rules, however long the record.

After the engine, each kept reading stands again for its class: a card names the same readings
as if the engine had seen them all, up to `SHOWN` of a class; of a larger class, the highest,
the lowest and the latest, each saying how many readings the class had.
"""

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from cds_service.engine import SENTINEL, Firing, Outcome, compile_ruleset
from cds_service.facts import Fact, FactSet
from cds_service.knowledge import COMPARE, Knowledge, Rule

SHOWN = 10
"""The readings of one class a card lists one by one; beyond, it lists three and the count."""

_OBSERVATION = "observation"
_COMPARISONS = {f"${op}": compare for op, compare in COMPARE.items()}
Test = Callable[[Fact], bool]
_ABSENT = object()


def _test(term: dict[str, Any]) -> Test:
    """A compiled pattern term as a Python test (durable-rules: a missing field never matches)."""
    ((key, operand),) = term.items()
    compare = _COMPARISONS.get(key)
    if compare is not None:
        ((name, bound),) = operand.items()
        return lambda fact: name in fact and compare(fact[name], bound)  # type: ignore[literal-required]
    if key.startswith("$"):
        raise ValueError(f"summaries cannot evaluate the pattern operator {key!r}")
    return lambda fact: key in fact and fact[key] == operand  # type: ignore[literal-required]


def _field(term: dict[str, Any]) -> str:
    """The fact field a compiled pattern term tests."""
    ((key, operand),) = term.items()
    return next(iter(operand)) if key in _COMPARISONS else key


@dataclass(frozen=True)
class Summary:
    """The facts the engine is to see, and the readings each kept one stands for."""

    facts: list[Fact]
    stands_for: dict[str, tuple[str, ...]]

    def expand(self, outcome: Outcome) -> Outcome:
        """`outcome` as if the engine had matched every reading of each kept one's class."""

        def ids(found: Iterable[str]) -> frozenset[str]:
            return frozenset(i for f in found for i in self.stands_for.get(f, (f,)))

        return Outcome(
            firings=[Firing(f.rule_id, ids(f.fact_ids)) for f in outcome.firings],
            derived={fact_id: ids(on) for fact_id, on in outcome.derived.items()},
        )


class Summaries:
    """The observation patterns of a rule set, compiled once; `summarise` runs per evaluation."""

    def __init__(self, knowledge: Knowledge, rules: Iterable[Rule]) -> None:
        self._by_concept: dict[str | None, list[tuple[int, list[Test]]]] = defaultdict(list)
        self._count = 0
        self._candidates: dict[str, list[tuple[int, list[Test]]]] = {}
        self.per_class = 1
        """Readings kept per class: the most observation patterns of one rule alternative."""
        fields: set[str] = set()
        for name, rule in compile_ruleset(knowledge, rules).items():
            if name == SENTINEL:
                continue
            patterns = [next(iter(p.values()))["$and"] for p in rule["all"]]
            observed = [terms for terms in patterns if {"type": _OBSERVATION} in terms]
            self.per_class = max(self.per_class, len(observed))
            for terms in observed:
                concept = next((t["concept"] for t in terms if "concept" in t), None)
                tests = [_test(t) for t in terms if t != {"type": _OBSERVATION}]
                fields.update(_field(t) for t in terms if t != {"type": _OBSERVATION})
                self._by_concept[concept].append((self._count, tests))
                self._count += 1
        self._fields = tuple(sorted(fields - {"concept"}))
        """The fields of a reading any pattern tests: readings alike on them match alike."""
        self._absent = (_ABSENT,) * len(self._fields)

    def _patterns_for(self, concept: str) -> list[tuple[int, list[Test]]]:
        """The patterns that can match a reading of `concept` (remembered)."""
        patterns = [*self._by_concept.get(concept, ()), *self._by_concept.get(None, ())]
        self._candidates[concept] = patterns
        return patterns

    def _matched(self, concept: str, fact: Fact) -> tuple[int, ...]:
        """The patterns a reading matches (by their number)."""
        candidates = self._candidates.get(concept)
        if candidates is None:
            candidates = self._patterns_for(concept)
        return tuple(n for n, tests in candidates if all(test(fact) for test in tests))

    def summarise(self, facts: FactSet) -> Summary:
        """The engine's facts for `facts`: its other facts, and a few readings of each class.

        A large class's shown readings get their count in `facts.evidence`.
        """
        kept: set[str] = set()
        classes: dict[tuple[str, tuple[int, ...]], list[Fact]] = defaultdict(list)
        seen: dict[tuple[Any, ...], tuple[int, ...]] = {}  # by concept and `_fields`
        for fact in facts.facts:
            if fact["type"] != _OBSERVATION:
                kept.add(fact["id"])
                continue
            concept = fact["concept"]  # type: ignore[typeddict-item]
            alike = (concept, *map(fact.get, self._fields, self._absent))
            matched = seen.get(alike)
            if matched is None:
                matched = seen[alike] = self._matched(concept, fact)
            if matched:
                classes[concept, matched].append(fact)
        stands_for: dict[str, tuple[str, ...]] = {}
        for members in classes.values():
            shown = _shown(members, facts)
            for fact in members[: self.per_class]:
                kept.add(fact["id"])
                stands_for[fact["id"]] = shown
        return Summary([fact for fact in facts.facts if fact["id"] in kept], stands_for)


def _shown(members: list[Fact], facts: FactSet) -> tuple[str, ...]:
    """The ids a card names for a class: all of a small one; else its highest, lowest and
    latest reading, each evidence line saying how many readings the class had."""
    if len(members) <= SHOWN:
        return tuple(fact["id"] for fact in members)
    roles: dict[str, list[str]] = defaultdict(list)
    valued = [fact for fact in members if "value" in fact]
    if valued:
        roles[max(valued, key=lambda f: f["value"])["id"]].append("highest")  # type: ignore[typeddict-item]
        roles[min(valued, key=lambda f: f["value"])["id"]].append("lowest")  # type: ignore[typeddict-item]
    dated = [(_when(facts, fact["id"]), n) for n, fact in enumerate(members)]
    roles[members[max(dated)[1]]["id"]].append("latest")  # of the latest day, the last sent
    for fact_id, said in roles.items():
        evidence = facts.evidence[fact_id]
        count = f"the {' and '.join(said)} of {len(members):,} readings that meet the same rules"
        facts.evidence[fact_id] = tuple(
            e._replace(value=f"{e.value}; {count}" if e.value else count) for e in evidence
        )
    return tuple(fact["id"] for fact in members if fact["id"] in roles)


def _when(facts: FactSet, fact_id: str) -> date:
    """The date of a reading's evidence (`date.min` when undated)."""
    latest = date.min
    for evidence in facts.evidence[fact_id]:  # a loop: called for every reading of a class
        if evidence.when is not None and evidence.when > latest:
            latest = evidence.when
    return latest
