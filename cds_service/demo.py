"""Demo traffic for the committee dashboard: replay the example requests against a running
service, as new evaluations, and answer its cards with seeded, realistic CDS Hooks feedback."""

import random
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

import httpx

from cds_service import examples

ACCEPT_RATE: Final = {"critical": 0.80, "warning": 0.45, "info": 0.10}
"""How often a clinician accepts a card's first suggestion, by the card's indicator."""
OVERRIDE_RATE: Final = {"critical": 0.15, "warning": 0.35, "info": 0.15}
"""How often a card is overridden. The rest is ignored (no feedback): critical 5%, warning 20%,
info 75%. A card without suggestions cannot be accepted: its share of accepts is ignored too."""
COMMENT_RATE: Final = 0.30
"""How often an override with a reason also carries a comment."""
COMMENT_ONLY_RATE: Final = 0.10
"""How often an override gives a comment and no reason (always, on a card that offers none)."""
MAX_DELAY_MINUTES: Final = 10
"""An outcome is recorded 1 to this many minutes after the card arrived."""
COMMENTS: Final = (
    "Seen by the specialist last month.",
    "Patient prefers to wait two weeks and review.",
    "Discussed with the patient; referral declined.",
    "Already under investigation at another hospital.",
    "Symptoms explained by a recent injury.",
)
TIMEOUT_SECONDS: Final = 30.0

Outcome = Literal["accepted", "overridden", "ignored"]


@dataclass(frozen=True)
class DemoSummary:
    """What a run did. Accepted and overridden count feedback the service acknowledged."""

    requests: int
    """Hook calls sent."""
    cards: int
    accepted: int
    overridden: int
    ignored: int
    """Cards given no feedback."""
    errors: tuple[str, ...]
    """One line per non-2xx answer: the endpoint called, and the HTTP status."""


def run(
    base_url: str, examples_dir: Path, today: date, rounds: int = 3, seed: int = 0
) -> DemoSummary:
    """POST every example in `examples_dir`, rebased to `today`, to the service at `base_url`,
    `rounds` times, each with a fresh hookInstance, and send feedback on the cards.

    For a service in try-it mode (`make serve`, authentication off): with authentication on,
    every call needs its own JWT (audience and jti), which a demo has no issuer key to sign.

    Deterministic for a seed, given the same answers. An unreachable service raises
    httpx.TransportError.
    """
    rng = random.Random(seed)
    requests = [examples.load(path, today) for path in examples.names(examples_dir).values()]
    tally: Counter[str] = Counter()
    errors: list[str] = []
    with httpx.Client(base_url=base_url, timeout=TIMEOUT_SECONDS) as client:
        for _ in range(rounds):
            for request in requests:
                _replay(client, request, rng, tally, errors)
    return DemoSummary(
        requests=tally["requests"],
        cards=tally["cards"],
        accepted=tally["accepted"],
        overridden=tally["overridden"],
        ignored=tally["ignored"],
        errors=tuple(errors),
    )


def format_summary(summary: DemoSummary) -> str:
    """The summary as a few lines of text; repeated errors are shown once, with a count."""
    lines = [
        f"{summary.requests} requests, {summary.cards} cards: {summary.accepted} accepted, "
        f"{summary.overridden} overridden, {summary.ignored} ignored; "
        f"{len(summary.errors)} errors"
    ]
    lines += [f"  {count} x {error}" for error, count in Counter(summary.errors).items()]
    return "\n".join(lines)


def _replay(
    client: httpx.Client,
    request: dict[str, Any],
    rng: random.Random,
    tally: Counter[str],
    errors: list[str],
) -> None:
    """Send one example as a new evaluation, then the feedback decided for its cards."""
    service = f"/cds-services/{request['hook']}"
    tally["requests"] += 1
    answer = client.post(service, json={**request, "hookInstance": str(uuid.uuid4())})
    if not answer.is_success:
        errors.append(f"POST {service}: HTTP {answer.status_code}")
        return
    cards: list[dict[str, Any]] = answer.json().get("cards", [])
    tally["cards"] += len(cards)
    decided = [(card, _decide(card, rng)) for card in cards]
    tally["ignored"] += sum(outcome == "ignored" for _, outcome in decided)
    now = datetime.now(UTC)
    items = [
        _feedback(card, outcome, rng, now) for card, outcome in decided if outcome != "ignored"
    ]
    if not items:
        return
    sent = client.post(f"{service}/feedback", json={"feedback": items})
    if not sent.is_success:
        errors.append(f"POST {service}/feedback: HTTP {sent.status_code}")
        return
    tally.update(item["outcome"] for item in items)


def _decide(card: dict[str, Any], rng: random.Random) -> Outcome:
    """What the clinician does with a card, at the rates for its indicator."""
    indicator = card["indicator"]
    roll = rng.random()
    if roll < OVERRIDE_RATE[indicator]:
        return "overridden"
    if roll < OVERRIDE_RATE[indicator] + ACCEPT_RATE[indicator] and card.get("suggestions"):
        return "accepted"
    return "ignored"


def _feedback(
    card: dict[str, Any], outcome: Outcome, rng: random.Random, now: datetime
) -> dict[str, Any]:
    """One CDS Hooks 2.0 feedback item, recorded a few minutes after `now`."""
    delay = timedelta(minutes=rng.randint(1, MAX_DELAY_MINUTES))
    item: dict[str, Any] = {
        "card": card["uuid"],
        "outcome": outcome,
        "outcomeTimestamp": (now + delay).isoformat(timespec="seconds"),
    }
    if outcome == "accepted":
        item["acceptedSuggestions"] = [{"id": card["suggestions"][0]["uuid"]}]
    else:
        item["overrideReason"] = _override_reason(card, rng)
    return item


def _override_reason(card: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """One of the card's own override reasons, sometimes with a comment; or a comment only."""
    reasons: list[dict[str, Any]] = card.get("overrideReasons") or []
    roll = rng.random()
    if not reasons or roll < COMMENT_ONLY_RATE:
        return {"userComment": rng.choice(COMMENTS)}
    reason: dict[str, Any] = {"reason": rng.choice(reasons)}
    if roll < COMMENT_ONLY_RATE + COMMENT_RATE:
        reason["userComment"] = rng.choice(COMMENTS)
    return reason
