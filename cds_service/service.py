"""The triage: request -> prefetch -> facts -> engine -> cards -> response, for each hook."""

from dataclasses import dataclass
from datetime import UTC, date, datetime

from cds_service.cards import CardBuilder
from cds_service.engine import Engine
from cds_service.facts import build_facts
from cds_service.knowledge import HOOKS, HookName, Knowledge
from cds_service.models import CDSResponse, HookRequest, ServiceDescriptor
from cds_service.prefetch import PREFETCH, read_record
from cds_service.relevance import relevance

_DESCRIPTIONS: dict[HookName, tuple[str, str]] = {
    "patient-view": (
        "Back pain triage on chart open",
        "Escalates back-pain red flags and suggests the right specialist referral, as a draft "
        "FHIR ServiceRequest, when the patient's chart is opened.",
    ),
    "order-select": (
        "Back pain triage while ordering",
        "Checks lumbar imaging and spine referral orders as they are selected against the "
        "back-pain guidelines, escalates red flags and suggests the fitting referral.",
    ),
    "order-sign": (
        "Back pain triage before signing",
        "Checks the draft orders being signed against the back-pain guidelines: inappropriate "
        "early imaging, red flags that need escalation, and the fitting referral.",
    ),
}


@dataclass(frozen=True)
class Evaluation:
    response: CDSResponse
    rules_fired: list[str]


class Triage:
    """One engine per hook (each with the rules that apply to it), built once at start-up."""

    def __init__(self, knowledge: Knowledge) -> None:
        self.knowledge = knowledge
        self.read = relevance(knowledge)
        self.engines = {
            hook: Engine(knowledge, (r for r in knowledge.rules.values() if hook in r.hooks), hook)
            for hook in HOOKS
        }

    def services(self) -> list[ServiceDescriptor]:
        manifest = self.knowledge.manifest
        return [
            ServiceDescriptor(
                id=hook,
                hook=hook,
                title=_DESCRIPTIONS[hook][0],
                description=_DESCRIPTIONS[hook][1],
                prefetch=PREFETCH,
                extension={
                    "org.spine-cds.ruleset": {"name": manifest.name, "version": manifest.version}
                },
            )
            for hook in HOOKS
        ]

    def evaluate(
        self, request: HookRequest, hook: HookName, today: date, review_url: str | None = None
    ) -> CDSResponse:
        """Cards for `request` at `hook`, as of `today`; raises CDSError for unusable input.

        With `review_url`, referral cards link to the SMART referral-review page there.
        """
        return self.run(request, hook, today, review_url).response

    def run(
        self, request: HookRequest, hook: HookName, today: date, review_url: str | None = None
    ) -> Evaluation:
        """`evaluate`, also telling which rules fired (for the audit record)."""
        record = read_record(request, hook, self.read)
        if record.patient is not None and record.patient.deceased:
            return Evaluation(CDSResponse(cards=[]), [])  # no triage, no referral for the dead
        facts = build_facts(record, self.knowledge, today)
        engine = self.engines[hook]
        outcome = engine.evaluate(facts.facts)
        builder = CardBuilder(self.knowledge, record.patient_id, today, review_url, record.partial)
        response = CDSResponse(cards=builder.build(outcome, facts, engine.rules))
        return Evaluation(response, [firing.rule_id for firing in outcome.firings])


def today_utc() -> date:
    """The evaluation date when none is configured."""
    return datetime.now(UTC).date()
