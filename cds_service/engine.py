"""The durable-rules engine: rule files compiled to a ruleset, one isolated session per evaluation.

durable-rules is driven through its C binding only (docs/architecture.md, "The engine"): the
`durable.lang` Host starts background dispatcher threads that grab actions from other sessions and
crash under threads. Every evaluation gets its own session id, asserts its facts in one batch, runs
the agenda to a fixpoint (derived facts are asserted back: forward chaining) and always deletes
the session. A sentinel rule fires once per session, which keeps `delete_state` away from its
crash on sessions that fired nothing.

Negation is applied after the fixpoint (`Rule.unless`), not with durable-rules' `$not`: measured
here, a `$not` pattern does not withdraw an activation already on the agenda when the fact it
negates is asserted later, so its result would depend on rule order.
"""

import itertools
import json
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import durable_rules_engine as dre
import orjson

from cds_service.facts import FIELDS, Fact, derived_fact, derived_id
from cds_service.knowledge import COMPARE, Clause, Knowledge, Rule

SENTINEL = "__sentinel__"
_OPERATORS = {op: f"${op}" for op in COMPARE}
_ALTERNATIVE = "#"
_SINGLETONS = {  # clauses on the one episode or patient fact: (fact type, field)
    "episode_weeks": ("episode", "weeks"),
    "onset_age": ("episode", "onset_age"),
    "age": ("patient", "age"),
}


@dataclass(frozen=True)
class Firing:
    """A rule that fired, with the ids of every fact that matched it (over all its matches)."""

    rule_id: str
    fact_ids: frozenset[str]


@dataclass
class Outcome:
    """What one evaluation produced: firings in order, and the facts each derived fact rests on."""

    firings: list[Firing]
    derived: dict[str, frozenset[str]] = field(default_factory=dict)

    def holds(self, name: str) -> bool:
        return derived_id(name) in self.derived


def _field(fact_type: str, name: str) -> str:
    """`name`, checked to be a field of `fact_type` facts (facts.py's contract)."""
    if name not in FIELDS[fact_type]:
        raise ValueError(f"a pattern tests {name!r}, which {fact_type} facts do not have")
    return name


def _pattern(clause: Clause, knowledge: Knowledge) -> dict[str, Any]:
    kind = clause.kind
    terms: list[dict[str, Any]]
    if kind in _SINGLETONS:
        fact_type, field_name = _SINGLETONS[kind]
        comparison = getattr(clause, kind)
        terms = [{"type": fact_type}]
    else:
        fact_type, field_name = kind, ("value" if kind == "observation" else "weeks")
        comparison = clause.value if kind == "observation" else clause.weeks
        terms = [{"type": kind}, {_field(kind, "concept"): getattr(clause, kind)}]
    for flag in ("positive", "flag", "current", "new"):
        if getattr(clause, flag) is not None:
            terms.append({_field(fact_type, flag): getattr(clause, flag)})
    for op, bound in comparison.items() if comparison else ():
        terms.append({_OPERATORS[op]: {_field(fact_type, field_name): knowledge.threshold(bound)}})
    for name in ("span_weeks", "last_days", "course_weeks", "sessions"):
        comparison = getattr(clause, name)
        for op, bound in comparison.items() if comparison else ():
            terms.append({_OPERATORS[op]: {_field(fact_type, name): knowledge.threshold(bound)}})
    return {"$and": terms}


def _patterns(alternative: list[Clause], knowledge: Knowledge) -> list[dict[str, Any]]:
    """One pattern per fact: clauses on the episode (or the patient) merge into one pattern.

    durable-rules never lets one fact match two patterns of a rule (measured), so
    `episode-weeks` and `onset-age` in one alternative must test the same pattern.
    """
    merged: dict[str, list[dict[str, Any]]] = {}
    for n, clause in enumerate(alternative):
        terms = _pattern(clause, knowledge)["$and"]
        key = json.dumps(terms[0]) if clause.kind in _SINGLETONS else str(n)
        merged.setdefault(key, [terms[0]]).extend(terms[1:])
    return [{"$and": terms} for terms in merged.values()]


def compile_ruleset(knowledge: Knowledge, rules: Iterable[Rule]) -> dict[str, Any]:
    """The durable-rules JSON for `rules`: one engine rule per `match` alternative."""
    ruleset: dict[str, Any] = {}
    for rule in rules:
        for index, alternative in enumerate(rule.match):
            ruleset[f"{rule.id}{_ALTERNATIVE}{index}"] = {
                "all": [
                    {f"m_{n}": pattern}
                    for n, pattern in enumerate(_patterns(alternative, knowledge))
                ]
            }
    ruleset[SENTINEL] = {"all": [{"m_0": {"type": SENTINEL}}], "pri": 1_000_000}
    return ruleset


class Engine:
    """A compiled ruleset for one hook; `evaluate` is safe to call from any thread."""

    _sessions = itertools.count()

    def __init__(self, knowledge: Knowledge, rules: Iterable[Rule], name: str) -> None:
        self._rules = {rule.id: rule for rule in rules}
        definition = json.dumps(compile_ruleset(knowledge, self._rules.values()))
        self._handle = dre.create_ruleset(f"{name}-{os.getpid()}-{id(self)}", definition)
        # One evaluation at a time per ruleset: the GIL serialises the C calls anyway, and the
        # lock keeps the engine's per-ruleset session pool from ever seeing interleaved sessions.
        self._lock = threading.Lock()

    @property
    def rules(self) -> dict[str, Rule]:
        return self._rules

    def evaluate(self, facts: list[Fact]) -> Outcome:
        """Run the rules over `facts` (each with a unique `id`) in a fresh session."""
        sid = f"s{os.getpid()}-{next(self._sessions)}"
        batch = [{**fact, "sid": sid} for fact in facts]
        batch.append({"id": SENTINEL, "type": SENTINEL, "sid": sid})
        with self._lock:
            try:
                return self._run(sid, batch)
            finally:
                dre.delete_state(self._handle, sid)

    def _run(self, sid: str, batch: list[dict[str, Any]]) -> Outcome:
        _, state = dre.assert_facts(self._handle, orjson.dumps(batch).decode())
        matched: dict[str, set[str]] = {}
        outcome = Outcome(firings=[])
        started = dre.start_action_for_state(self._handle, state)
        message = started[1] if started else None
        while message:
            ((engine_rule, match),) = orjson.loads(message).items()
            if engine_rule != SENTINEL:
                rule = self._rules[engine_rule.split(_ALTERNATIVE)[0]]
                ids = {fact["id"] for fact in match.values()}
                matched.setdefault(rule.id, set()).update(ids)
                self._derive(sid, rule, ids, outcome)
            message = dre.complete_and_start_action(self._handle, state)
        outcome.firings = [Firing(rule_id, frozenset(ids)) for rule_id, ids in matched.items()]
        return outcome

    def _derive(self, sid: str, rule: Rule, ids: set[str], outcome: Outcome) -> None:
        for name in rule.derive:
            fact_id = derived_id(name)
            known = outcome.derived.get(fact_id)
            outcome.derived[fact_id] = (known or frozenset()) | ids
            if known is None:
                fact = {**derived_fact(name), "sid": sid}
                dre.assert_fact(self._handle, orjson.dumps(fact).decode())
