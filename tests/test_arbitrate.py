"""Card arbitration (`cards.arbitrate`): one card per problem, the most urgent rule winning."""

from typing import Any

from cds_service.cards import arbitrate
from cds_service.engine import Firing, Outcome
from cds_service.facts import derived_id
from cds_service.knowledge import Rule


def _rule(
    rule_id: str,
    problem: str | None = "back",
    indicator: str = "warning",
    refer: str | None = None,
    precedence: int = 100,
    **members: Any,
) -> Rule:
    """A rule with a card (`indicator`, a neurology referral at `refer` priority, or advice);
    pass `card=None` and `derive=[...]` for a rule that only derives."""
    card: dict[str, Any] = {"indicator": indicator, "summary": rule_id, "precedence": precedence}
    if refer is not None:
        card["refer"] = {"specialty": "neurology", "priority": refer}
    fields: dict[str, Any] = {
        "id": rule_id,
        "version": "1.0.0",
        "title": rule_id,
        "when": "test",
        "then": "test",
        "guideline": "test",
        "hooks": ["patient-view"],
        "problem": problem,
        "match": [[{"finding": "radiculopathy"}]],
        "card": card,
    }
    return Rule.model_validate(fields | members)


def _winners(*rules: Rule, derived: tuple[str, ...] = ()) -> list[str]:
    """The winning rule ids when every rule fired, and `derived` facts hold."""
    outcome = Outcome(
        firings=[Firing(rule.id, frozenset({f"f-{rule.id}"})) for rule in rules],
        derived={derived_id(name): frozenset({"f0"}) for name in derived},
    )
    return [rule.id for rule, _, _ in arbitrate(outcome, {rule.id: rule for rule in rules})]


def test_critical_beats_warning_beats_info_within_a_problem() -> None:
    info = _rule("a-info", indicator="info")
    warning = _rule("b-warning", indicator="warning")
    critical = _rule("c-critical", indicator="critical")
    assert _winners(info, warning, critical) == ["c-critical"]
    assert _winners(info, warning) == ["b-warning"]


def test_at_one_indicator_stat_beats_urgent_beats_routine_beats_advice() -> None:
    advice = _rule("a-advice")
    routine = _rule("b-routine", refer="routine")
    urgent = _rule("c-urgent", refer="urgent")
    stat = _rule("d-stat", refer="stat")
    assert _winners(advice, routine, urgent, stat) == ["d-stat"]
    assert _winners(advice, routine, urgent) == ["c-urgent"]
    assert _winners(advice, routine) == ["b-routine"]


def test_precedence_then_rule_id_break_ties() -> None:
    assert _winners(_rule("a", precedence=20), _rule("b", precedence=10)) == ["b"]
    assert _winners(_rule("b"), _rule("a")) == ["a"]


def test_each_problem_keeps_its_own_card() -> None:
    assert _winners(_rule("x", problem="one"), _rule("y", problem="two")) == ["x", "y"]


def test_a_rule_is_dropped_when_an_unless_fact_holds() -> None:
    urgent = _rule("urgent", refer="urgent", unless=["already-imaged"])
    routine = _rule("routine", refer="routine")
    assert _winners(urgent, routine) == ["urgent"]
    assert _winners(urgent, routine, derived=("already-imaged",)) == ["routine"]
    assert _winners(urgent, routine, derived=("something-else",)) == ["urgent"]


def test_a_rule_without_a_card_only_derives() -> None:
    deriving = _rule("derive-only", problem=None, card=None, derive=["red-flag"])
    assert _winners(deriving) == []


def test_cards_of_different_problems_are_ordered_most_urgent_first() -> None:
    rules = [
        _rule("a-info", problem="p1", indicator="info"),
        _rule("b-routine", problem="p2", refer="routine"),
        _rule("c-critical", problem="p3", indicator="critical", refer="urgent"),
        _rule("d-stat", problem="p4", refer="stat"),
        _rule("e-critical-stat", problem="p5", indicator="critical", refer="stat"),
    ]
    assert _winners(*rules) == ["e-critical-stat", "c-critical", "d-stat", "b-routine", "a-info"]
    # Across problems `precedence` plays no part: equally urgent cards go by rule id.
    tied = [_rule("b", problem="p1", precedence=1), _rule("a", problem="p2", precedence=99)]
    assert _winners(*tied) == ["a", "b"]


def test_the_winner_keeps_its_own_firing_and_card() -> None:
    loser, winner = _rule("loser", refer="routine"), _rule("winner", refer="urgent")
    outcome = Outcome(
        firings=[Firing("loser", frozenset({"f1"})), Firing("winner", frozenset({"f2", "f3"}))]
    )
    ((rule, card, firing),) = arbitrate(outcome, {"loser": loser, "winner": winner})
    assert rule is winner
    assert card is winner.card
    assert firing.fact_ids == {"f2", "f3"}


def test_firings_of_rules_left_out_are_not_arbitrated() -> None:
    """Arbitrating the active rules only gives the answer as if silent rules did not exist."""
    silent, active = _rule("silent", refer="stat"), _rule("active", refer="routine")
    outcome = Outcome(firings=[Firing("silent", frozenset()), Firing("active", frozenset())])
    both = {"silent": silent, "active": active}
    assert [won[0].id for won in arbitrate(outcome, both)] == ["silent"]
    assert [won[0].id for won in arbitrate(outcome, {"active": active})] == ["active"]
