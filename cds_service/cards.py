"""Cards: the rules that fired, arbitrated to one card per problem, each saying why it fired.

Arbitration: a rule whose `unless` fact was derived is dropped; of the rest, the most urgent rule
wins each problem (critical over warning over info, then stat over urgent over routine); no
suggestion repeats a referral that draftOrders or an open referral already hold at the same or a
higher priority, and a less urgent one is replaced (`ServiceRequest.replaces`, or a delete of the
draft order) by the more urgent referral the card suggests.
"""

import re
import secrets
import string
import uuid
from collections.abc import Mapping
from datetime import date
from typing import Any

from cds_service.engine import Firing, Outcome
from cds_service.facts import Evidence, FactSet, Referred, derived_id, record_fact_order
from cds_service.knowledge import CardSpec, Knowledge, Referral, Rule
from cds_service.models import Action, Card, Coding, Link, Source, Suggestion

_INDICATOR_RANK = {"critical": 0, "warning": 1, "info": 2}
_PRIORITY_RANK = {"stat": 0, "urgent": 1, "routine": 2, None: 3}
_REQUEST_PRIORITY_RANK = {"stat": 0, "asap": 1, "urgent": 1, "routine": 2, None: 2}
"""An existing request's priority (FHIR request-priority; none stated reads as routine)."""
_REASON_TYPES = ("Condition", "Observation")


def _urgency(rule: Rule, card: CardSpec) -> tuple[int, int, int, str]:
    priority = card.refer.priority if card.refer else None
    return _INDICATOR_RANK[card.indicator], _PRIORITY_RANK[priority], card.precedence, rule.id


def _display_order(rule: Rule, card: CardSpec) -> tuple[int, int, str]:
    """Cards of different problems: most urgent first, then by rule id."""
    indicator, priority, _, rule_id = _urgency(rule, card)
    return indicator, priority, rule_id


Winner = tuple[Rule, CardSpec, Firing]


def arbitrate(outcome: Outcome, rules: Mapping[str, Rule]) -> list[Winner]:
    """The winning (rule, card, firing) of each problem among `rules`, most urgent first.

    Firings of rules not in `rules` are left out: arbitrating only the active rules gives the
    answer as if silent rules did not exist.
    """
    winners: dict[str, Winner] = {}
    for firing in outcome.firings:
        rule = rules.get(firing.rule_id)
        if rule is None or rule.card is None or any(outcome.holds(n) for n in rule.unless):
            continue
        problem = rule.problem or rule.id
        current = winners.get(problem)
        if current is None or _urgency(rule, rule.card) < _urgency(current[0], current[1]):
            winners[problem] = (rule, rule.card, firing)
    return sorted(winners.values(), key=lambda won: _display_order(won[0], won[1]))


def rests_on(fact_ids: frozenset[str], outcome: Outcome) -> set[str]:
    """`fact_ids` and, for each derived fact among them, the facts it rests on, transitively."""
    seen: set[str] = set()
    pending = list(fact_ids)
    while pending:
        fact_id = pending.pop()
        if fact_id in seen:
            continue
        seen.add(fact_id)
        pending.extend(outcome.derived.get(fact_id, ()))
    return seen


def evidence_of(fact_ids: frozenset[str], outcome: Outcome, facts: FactSet) -> list[Evidence]:
    """The record entries behind facts, following derived facts back to what they rest on."""
    ordered = sorted(
        (f for f in rests_on(fact_ids, outcome) if f in facts.evidence), key=record_fact_order
    )
    # One line per entry and code: a Condition that is both a finding and the start of the
    # episode shows once, where it first appears, with the episode's duration first and what
    # the finding means (a risk's) after it.
    lines: dict[tuple[str | None, str, str], Evidence] = {}
    for fact_id in ordered:
        episode = facts.facts[record_fact_order(fact_id)]["type"] == "episode"
        for e in facts.evidence[fact_id]:
            key = (e.reference, e.system, e.code) if e.reference else (repr(e), "", "")
            seen = lines.get(key)
            if seen is None or not seen.value:
                lines[key] = e
            elif e.value and e.value != seen.value:
                first, then = (e.value, seen.value) if episode else (seen.value, e.value)
                lines[key] = seen._replace(value=f"{first}; {then}")
    return list(lines.values())


class CardBuilder:
    """Builds the cards of one evaluation."""

    def __init__(
        self,
        knowledge: Knowledge,
        patient_id: str,
        today: date,
        review_url: str | None,
        partial: list[str] | None = None,
    ) -> None:
        self._knowledge = knowledge
        self._patient_id = patient_id
        self._today = today
        self._review_url = review_url  # the SMART referral-review app; None: no link
        self._partial = partial or []  # prefetch keys that hold only a first page

    def build(self, winners: list[Winner], outcome: Outcome, facts: FactSet) -> list[Card]:
        """One card per winner of the arbitration, in its order."""
        return [
            self._card(rule, spec, evidence_of(firing.fact_ids, outcome, facts), facts, outcome)
            for rule, spec, firing in winners
        ]

    def _card(
        self,
        rule: Rule,
        spec: CardSpec,
        evidence: list[Evidence],
        facts: FactSet,
        outcome: Outcome,
    ) -> Card:
        every = [*spec.cautions, *self._knowledge.config.cautions]
        cautions = (self._caution(c.say, c.if_, outcome, facts) for c in every)
        notes = [note for note in cautions if note is not None]
        notes += [self._partial_note()] if self._partial else []
        notes += [_implausible_note(facts.implausible)] if facts.implausible else []
        notes += [_unjudged_note(facts.unjudged)] if spec.reassures and facts.unjudged else []
        suggestions = self._suggestions(rule, spec, evidence, facts.referred, notes)
        guideline = self._knowledge.guidelines[rule.guideline]
        own = self._knowledge.manifest.own_code_system
        card_id = str(uuid.uuid4())
        refers = any(a.type == "create" for s in suggestions for a in s.actions)
        return Card(
            uuid=card_id,
            summary=spec.summary,
            detail=self._detail(rule, evidence, notes),
            indicator=spec.indicator,
            source=Source(
                label=guideline.label,
                url=guideline.url,
                topic=Coding(
                    system=f"{own}/problem", code=rule.problem or rule.id, display=rule.title
                ),
            ),
            suggestions=suggestions or None,
            selectionBehavior=("any" if spec.remove_order else "at-most-one")
            if suggestions
            else None,
            overrideReasons=[
                Coding(
                    system=self._knowledge.system_uri(r.system)
                    if r.system
                    else f"{own}/override-reason",
                    code=r.code,
                    display=r.display,
                )
                for r in self._knowledge.config.override_reasons
            ]
            if spec.indicator != "info"
            else None,
            links=[
                Link(
                    label="Review the evidence and the draft referral",
                    url=self._review_url,
                    type="smart",
                    appContext=f"{card_id}.{secrets.token_urlsafe(24)}",
                )
            ]
            if refers and self._review_url
            else None,
            extension={
                "org.spine-cds.rule": {
                    "id": rule.id,
                    "version": rule.version,
                    "ruleset": self._knowledge.version,
                }
            },
        )

    def _caution(self, say: str, name: str, outcome: Outcome, facts: FactSet) -> str | None:
        """`say`, with the record entries behind it, when the derived fact `name` holds."""
        if not outcome.holds(name):
            return None
        because = evidence_of(frozenset({derived_id(name)}), outcome, facts)
        return f"**Caution:** {say.strip()} Because of: " + "; ".join(map(describe, because)) + "."

    def _partial_note(self) -> str:
        keys = ", ".join(f"`{key}`" for key in self._partial)
        return (
            f"**Partial record:** prefetch {keys} held only the first page of its search (the "
            "Bundle has a `next` link) and could not be completed from the FHIR server; "
            "entries on later pages were not checked."
        )

    def _suggestions(
        self,
        rule: Rule,
        spec: CardSpec,
        evidence: list[Evidence],
        referred: dict[str, list[Referred]],
        notes: list[str],
    ) -> list[Suggestion]:
        removed = {  # one delete per order, however many of its codes matched
            e.reference: e.display
            for e in reversed(evidence)
            if spec.remove_order
            and e.resource_type == "ServiceRequest"
            and e.reference
            and not e.stated
        }
        orders = [(display, _delete(ref, display)) for ref, display in reversed(removed.items())]
        deletes = [action for _, action in orders]
        if not spec.referrals:
            return [
                Suggestion(
                    label=f"Remove the order: {display}", uuid=str(uuid.uuid4()), actions=[action]
                )
                for display, action in orders
            ]
        suggestions = []
        for referral in spec.referrals:
            title = self._knowledge.specialties[referral.specialty].title.lower()
            existing = referred.get(referral.specialty, [])
            wanted = _PRIORITY_RANK[referral.priority]
            if any(_REQUEST_PRIORITY_RANK[r.priority] <= wanted for r in existing):
                notes.append(f"A referral to {title} is already ordered; none is added.")
                continue
            for lower in existing:
                state = "being ordered" if lower.draft else "open"
                notes.append(
                    f"A {lower.priority or 'routine'} referral to {title} is already {state} "
                    f"({inert(lower.reference or '')}); the suggested {referral.priority} "
                    "referral replaces it."
                )
            recommended = referral is spec.refer
            suggestions.append(
                self._referral(rule, referral, evidence, recommended, deletes, existing)
            )
        return suggestions

    def _referral(
        self,
        rule: Rule,
        referral: Referral,
        evidence: list[Evidence],
        recommended: bool,
        deletes: list[Action],
        lower: list[Referred],
    ) -> Suggestion:
        """Create the referral, replacing the matched draft orders (deletes) and any `lower`
        priority request to the same specialty (a draft is deleted, an open one `replaces`)."""
        title = self._knowledge.specialties[referral.specialty].title.lower()
        replaced = [r.reference for r in lower if r.reference and not r.draft]
        deletes = deletes + [
            _delete(r.reference, f"{r.priority or 'routine'} referral to {title}")
            for r in lower
            if r.reference and r.draft
        ]
        resource = service_request(
            self._knowledge, referral, self._patient_id, self._today, rule.then, evidence, replaced
        )
        label = f"Refer to {title} ({referral.priority})"
        if deletes:
            label = f"Replace the order by a referral to {title} ({referral.priority})"
        elif replaced:
            label += ", replacing the open less urgent referral"
        return Suggestion(
            label=label,
            uuid=str(uuid.uuid4()),
            isRecommended=recommended,
            actions=[
                *deletes,
                Action(
                    type="create",
                    description=f"Create a {referral.priority} referral to {title}",
                    resource=resource,
                ),
            ],
        )

    def _detail(self, rule: Rule, evidence: list[Evidence], notes: list[str]) -> str:
        lines = [f"**Why this card:** {rule.when.strip()}", "", "**Findings:**"]
        lines += [f"- {describe(e)}" for e in evidence] or ["- (none recorded)"]
        lines += ["", f"**What to do now:** {rule.then.strip()}"]
        lines += ["", *notes] if notes else []
        lines += [
            "",
            f"_Rule `{rule.id}` v{rule.version}, rule set {self._knowledge.manifest.name} "
            f"{self._knowledge.version}._",
        ]
        return "\n".join(lines)


def _implausible_note(results: list[Evidence]) -> str:
    shown = "; ".join(map(describe, results))
    return f"**Ignored as implausible** (a unit or entry error?): {shown}."


def _unjudged_note(entries: list[Evidence]) -> str:
    shown = "; ".join(map(describe, entries))
    return (
        "**Not judged by this rule set** (no rule reads these codes; consider whether any "
        f"bears on this back pain): {shown}."
    )


def _delete(reference: str, display: str) -> Action:
    return Action(
        type="delete",
        description=f"Remove the draft order {reference} ({display})",
        resourceId=reference,
    )


_ESCAPED = {ord(mark): f"\\{mark}" for mark in string.punctuation}
"""ASCII punctuation, backslash-escaped: what Markdown and HTML could read as markup."""
_LINKLIKE = re.compile(r"(?<!\S)\S*?(?://|www\.|@|[^\W_]\.[^\W\d_]{2})\S*", re.IGNORECASE)
"""A word a renderer's autolinking could read as a URL, domain or e-mail address (tried from
a word's start only: from each character it took time quadratic in the word's length)."""
_LINK_MARKS = re.compile(r":?//|[.:@]")


def inert(text: str) -> str:
    """Text from the record made inert in a Markdown `detail`: every ASCII punctuation mark is
    backslash-escaped (CommonMark), so no link, image, emphasis or raw HTML can come of it, and
    in a word that looks like a URL, domain or e-mail address the marks that make it one are
    bracketed (`https[://]attacker[.]example`), so no autolinking renderer links it either."""
    if "." in text or "/" in text or "@" in text:  # every link-like word has one
        text = _LINKLIKE.sub(lambda word: _LINK_MARKS.sub(r"[\g<0>]", word.group()), text)
    return text.translate(_ESCAPED)


_STATED = {
    "ServiceRequest": "the reason stated on the order ",
    "Procedure": "the reason recorded for the procedure ",
    "MedicationRequest": "the reason recorded for the prescription ",
    "MedicationStatement": "the reason recorded for the medicine ",
}
"""How a card names the entry whose `reasonCode` stated a finding."""


def describe(evidence: Evidence) -> str:
    """`Low back pain (SNOMED CT 279039007), Condition/c1, 2026-11-10`, record text made inert
    (a stated reason names its entry as `_STATED` says: `..., the reason stated on the order
    ServiceRequest/s1, ...`)."""
    parts = [inert(evidence.display)]
    if evidence.value:
        parts[0] += f": {inert(evidence.value)}"
    if evidence.code:
        parts[0] += f" ({inert(evidence.system)} {inert(evidence.code)})"
    if evidence.reference:
        stated = _STATED.get(evidence.resource_type, "") if evidence.stated else ""
        parts.append(stated + inert(evidence.reference))
    if evidence.when:
        parts.append(evidence.when.isoformat())
    return ", ".join(parts)


def service_request(
    knowledge: Knowledge,
    referral: Referral,
    patient_id: str,
    today: date,
    rationale: str,
    evidence: list[Evidence],
    replaces: list[str] | None = None,
) -> dict[str, Any]:
    """A draft R4 ServiceRequest for the referral.

    Built from the knowledge base's codes and checked FHIR ids and URIs from the record; its
    validity is checked by the tests with fhir.resources (R4B) over every example and over
    generated inputs, not on each request (it cost 0.4 ms of a 4 ms evaluation).
    """
    specialty = knowledge.specialties[referral.specialty]
    reasons = dict.fromkeys(
        e.reference for e in evidence if e.resource_type in _REASON_TYPES and e.reference
    )
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "priority": referral.priority,
        "subject": {"reference": f"Patient/{patient_id}"},
        "performerType": {
            "coding": [{"system": knowledge.system_uri("nucc"), **specialty.nucc.model_dump()}],
            "text": specialty.title,
        },
        "authoredOn": today.isoformat(),
        "note": [{"text": " ".join(rationale.split())}],
    }
    if specialty.referral is not None:
        resource["code"] = {
            "coding": [
                {"system": knowledge.system_uri("snomed"), **specialty.referral.model_dump()}
            ],
            "text": specialty.referral.display,
        }
    if reasons:
        resource["reasonReference"] = [{"reference": ref} for ref in reasons]
    if replaces:
        resource["replaces"] = [{"reference": ref} for ref in replaces]
    return resource
