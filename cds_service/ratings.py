"""systemActions: the service's rating of each draft order a card judged, for the EHR to apply.

A rule that says `rates-order` (e.g. lumbar imaging: not appropriate for acute back pain with
no red flag, appropriate with one) answers with a systemAction (CDS Hooks 2.0.1, "System
Action"): an `update` of that draft order, whole as the client sent it, carrying the Argonaut
PAMA rating extension, which an EHR may apply to the order without showing anything and the
CDS Hooks sandbox's PAMA tab shows as its "PAMA Rating". A rule with a card rates when its
card is shown (the rating is its verdict in a form a machine applies); a rule without a card
(appropriate imaging beside a red flag) rates when it fires and nothing it names in `unless`
holds: an appropriate order needs no card of its own.
"""

import copy
from collections.abc import Mapping
from typing import Any

from cds_service.cards import Winner, evidence_of
from cds_service.engine import Outcome
from cds_service.facts import FactSet
from cds_service.knowledge import Rating, Rule
from cds_service.models import Action
from cds_service.prefetch import entry_reference

PAMA_RATING = "http://fhir.org/argonaut/Extension/pama-rating"
"""The Argonaut extension the sandbox's PAMA tab and its PAMA service use for the rating
(cds-hooks/sandbox src/components/Pama/pama.jsx, sandbox-cds-services pama-imaging.js)."""
PAMA_RATING_SYSTEM = "http://fhir.org/argonaut/CodeSystem/pama-rating"


def order_ratings(
    winners: list[Winner],
    outcome: Outcome,
    rules: Mapping[str, Rule],
    facts: FactSet,
    judged: set[str],
    draft_orders: Any,
) -> list[Action]:
    """One `update` per judged draft order (by reference) that a rule rates: the winning cards'
    rules first (the most urgent card's rating when two would), then the card-less rules that
    fired. `draft_orders` is the request's `context.draftOrders` as sent (already read and
    checked by `prefetch`)."""
    sent = _orders_as_sent(draft_orders)
    rating = [(rule, firing) for rule, _, firing in winners if rule.rates_order]
    rating += [
        (rule, firing)
        for firing in outcome.firings
        if (rule := rules[firing.rule_id]).card is None
        and rule.rates_order
        and not any(outcome.holds(name) for name in rule.unless)
    ]
    rated: dict[str, Action] = {}
    for rule, firing in rating:
        verdict = rule.rates_order
        assert verdict is not None  # filtered above
        for evidence in evidence_of(firing.fact_ids, outcome, facts):
            reference = evidence.reference
            if reference in judged and reference in sent and reference not in rated:
                rated[reference] = Action(
                    type="update",
                    description=f"Rate the draft order {reference} {verdict} (rule {rule.id})",
                    resource=_rated(sent[reference], verdict),
                )
    return list(rated.values())


def _orders_as_sent(draft_orders: Any) -> dict[str, Mapping[str, Any]]:
    """The Bundle's resources by the reference the record knows them by."""
    entries = draft_orders.get("entry") if isinstance(draft_orders, Mapping) else None
    found: dict[str, Mapping[str, Any]] = {}
    for entry in entries if isinstance(entries, list) else []:
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if isinstance(resource, Mapping):
            reference = entry_reference(
                str(resource.get("resourceType")), resource.get("id"), entry.get("fullUrl")
            )
            if reference is not None:
                found.setdefault(reference, resource)
    return found


def _rated(order: Mapping[str, Any], rating: Rating) -> dict[str, Any]:
    """`order` with its PAMA rating replaced by `rating`, everything else as sent."""
    resource = copy.deepcopy(dict(order))
    # a list of objects with a `url`: checked when the record was read (fhir_model.Extension)
    others = [e for e in resource.get("extension", []) if e["url"] != PAMA_RATING]
    coding = {"system": PAMA_RATING_SYSTEM, "code": rating}
    rated = {"url": PAMA_RATING, "valueCodeableConcept": {"coding": [coding]}}
    resource["extension"] = [*others, rated]
    return resource
