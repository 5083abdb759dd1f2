"""The triage: request -> facts -> engine -> cards, for each hook, in-process and synchronous.

Silent (shadow) rules are evaluated and audited like active ones, but the answer comes from an
engine without them, exactly as if they did not exist (what a silent rule derives cannot change
it either). A second engine with every rule gives the would-be cards the silent rules win in
that arbitration, kept for the audit: switching a rule on shows beforehand what it would change.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime

from cds_service.cards import CardBuilder, arbitrate, evidence_of
from cds_service.engine import Engine
from cds_service.facts import Evidence, FactSet, build_facts
from cds_service.hooks import HOOKS, Hook, HookRegistry
from cds_service.knowledge import Knowledge, Mode
from cds_service.models import (
    Card,
    CDSResponse,
    HookRequest,
    PatientViewContext,
    ResponseExtension,
)
from cds_service.prefetch import read_context, read_record
from cds_service.queries import queries
from cds_service.ratings import order_ratings
from cds_service.relevance import Reader, readers
from cds_service.safety import is_red_flag
from cds_service.summaries import Summaries, Summary


@dataclass(frozen=True)
class Evaluation:
    """What one evaluation answered, and what the audit keeps besides."""

    response: CDSResponse
    card_rules: list[str]
    """The rule behind each card of the response, in order."""
    rules_fired: list[str]
    """Every rule that fired, silent ones included."""
    silent_cards: list[tuple[str, Card]]
    """(rule, card) a silent rule would have added had it been active."""
    red_flags: list[tuple[str, list[Evidence]]] = field(default_factory=list)
    """(rule, evidence) of each active red-flag rule that fired (for the safety monitor)."""


class Triage:
    """One engine per hook (each with the rules that name it), built once at start-up."""

    def __init__(
        self,
        knowledge: Knowledge,
        hooks: HookRegistry = HOOKS,
        modes: Mapping[str, Mode] | None = None,
    ) -> None:
        """`modes` overrides rule files' `mode` (a site silencing a rule without editing it)."""
        unknown = sorted(set(modes or {}) - set(knowledge.rules))
        if unknown:
            raise ValueError(f"rule modes name unknown rules: {', '.join(unknown)}")
        self.knowledge = knowledge
        self.hooks = hooks
        self.modes: dict[str, Mode] = {
            rule.id: (modes or {}).get(rule.id, rule.mode) for rule in knowledge.rules.values()
        }
        cardless = sorted(
            r for r, mode in self.modes.items() if mode == "silent" and not knowledge.rules[r].card
        )
        if cardless:
            raise ValueError(f"only rules with a card can be silent: {', '.join(cardless)}")
        self.summaries = Summaries(knowledge, knowledge.rules.values())
        self.queries = queries(knowledge)
        self.engines: dict[str, Engine] = {}
        """Per hook, the engine that answers: its rules minus the silent ones."""
        self.shadows: dict[str, Engine] = {}
        """Per hook with silent rules, the engine with every rule (for would-be cards)."""
        for hook in hooks:
            rules = [rule for rule in knowledge.rules.values() if hook in rule.hooks]
            active = [rule for rule in rules if self.modes[rule.id] == "active"]
            self.engines[hook] = Engine(knowledge, active, hook)
            if len(active) < len(rules):
                self.shadows[hook] = Engine(knowledge, rules, f"{hook}-shadow")

    def reader(self, today: date | None = None) -> Callable[[str], Reader]:
        """Per resource type, which raw resources an evaluation as of `today` reads
        (`relevance.py`)."""
        return readers(self.knowledge, today)

    @property
    def silent_rules(self) -> list[str]:
        return sorted(rule for rule, mode in self.modes.items() if mode == "silent")

    def evaluate(
        self, request: HookRequest, hook: str, today: date, review_url: str | None = None
    ) -> CDSResponse:
        """Cards for `request` at `hook`, as of `today`; raises CDSError for unusable input.

        With `review_url`, referral cards link to the SMART referral-review page there.
        """
        context = read_context(request, self.hooks[hook].context)
        return self.run(request, context, self.hooks[hook], today, review_url).response

    def run(
        self,
        request: HookRequest,
        context: PatientViewContext,
        hook: Hook,
        today: date,
        review_url: str | None = None,
    ) -> Evaluation:
        """`evaluate` with the context already read, also telling what the audit keeps."""
        record = read_record(request, context, self.queries, self.reader(today))
        if record.patient is not None and record.patient.deceased:
            return Evaluation(CDSResponse(cards=[]), [], [], [])  # no triage for the dead
        facts = build_facts(record, self.knowledge, today)
        summary = self.summaries.summarise(facts)
        builder = CardBuilder(self.knowledge, record.patient_id, today, review_url, record.partial)
        engine = self.engines[hook.id]
        outcome = summary.expand(engine.evaluate(summary.facts))
        answered = arbitrate(outcome, engine.rules)
        judged = {order.reference for order in record.judged_orders if order.reference}
        draft_orders = request.context.get("draftOrders")
        ratings = order_ratings(answered, outcome, engine.rules, facts, judged, draft_orders)
        evaluation = Evaluation(
            response=CDSResponse(
                cards=builder.build(answered, outcome, facts),
                systemActions=ratings or None,
                extension=ResponseExtension(systemActions=ratings) if ratings else None,
            ),
            card_rules=[rule.id for rule, _, _ in answered],
            rules_fired=[firing.rule_id for firing in outcome.firings],
            silent_cards=[],
            red_flags=[
                (firing.rule_id, evidence_of(firing.fact_ids, outcome, facts))
                for firing in outcome.firings
                if is_red_flag(engine.rules[firing.rule_id])
            ],
        )
        shadow = self.shadows.get(hook.id)
        if shadow is None:
            return evaluation
        return self._silent(evaluation, shadow, facts, summary, builder)

    def _silent(
        self,
        evaluation: Evaluation,
        shadow: Engine,
        facts: FactSet,
        summary: Summary,
        builder: CardBuilder,
    ) -> Evaluation:
        """`evaluation` with what the silent rules did: the rules that fire with every rule
        on, and the cards silent rules win in that arbitration (would-be cards)."""
        outcome = summary.expand(shadow.evaluate(summary.facts))
        would_be = [
            won for won in arbitrate(outcome, shadow.rules) if self.modes[won[0].id] == "silent"
        ]
        cards = builder.build(would_be, outcome, facts)
        return replace(
            evaluation,
            rules_fired=[firing.rule_id for firing in outcome.firings],
            silent_cards=[
                (rule.id, card) for (rule, _, _), card in zip(would_be, cards, strict=True)
            ],
        )


def today_utc() -> date:
    """The evaluation date when none is configured."""
    return datetime.now(UTC).date()
