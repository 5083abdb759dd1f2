"""The triage: request -> facts -> engine -> cards, for each hook, in-process and synchronous.

Silent (shadow) rules are evaluated like active ones; the answer is arbitrated as if they did not
exist, and the would-be cards they win in an arbitration over every rule are kept for the audit,
so switching a rule on shows beforehand what it would have changed.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime

from cds_service.cards import CardBuilder, arbitrate
from cds_service.engine import Engine
from cds_service.facts import build_facts
from cds_service.hooks import HOOKS, Hook, HookRegistry
from cds_service.knowledge import Knowledge, Mode
from cds_service.models import Card, CDSResponse, HookRequest, PatientViewContext
from cds_service.prefetch import read_context, read_record
from cds_service.relevance import relevance


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
        self.read = relevance(knowledge)
        self.engines = {
            hook: Engine(knowledge, (r for r in knowledge.rules.values() if hook in r.hooks), hook)
            for hook in hooks
        }

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
        record = read_record(request, context, hook.prefetch, self.read)
        if record.patient is not None and record.patient.deceased:
            return Evaluation(CDSResponse(cards=[]), [], [], [])  # no triage for the dead
        facts = build_facts(record, self.knowledge, today)
        engine = self.engines[hook.id]
        outcome = engine.evaluate(facts.facts)
        builder = CardBuilder(self.knowledge, record.patient_id, today, review_url, record.partial)
        active = {i: r for i, r in engine.rules.items() if self.modes[i] == "active"}
        answered = arbitrate(outcome, active)
        would_be = [won for won in arbitrate(outcome, engine.rules) if won[0].id not in active]
        return Evaluation(
            response=CDSResponse(cards=builder.build(answered, outcome, facts)),
            card_rules=[rule.id for rule, _, _ in answered],
            rules_fired=[firing.rule_id for firing in outcome.firings],
            silent_cards=[
                (rule.id, card)
                for (rule, _, _), card in zip(
                    would_be, builder.build(would_be, outcome, facts), strict=True
                )
            ],
        )


def today_utc() -> date:
    """The evaluation date when none is configured."""
    return datetime.now(UTC).date()
