"""Closing the loop: keyed pseudonyms that link evaluations of one patient or clinician, and the
rules the safety monitor watches and listens for.

A pseudonym is HMAC-SHA256 under `CDS_PSEUDONYM_KEY` of the id (with a prefix per kind, so a
patient and a clinician with the same id do not share one); the store never holds the id. With no
key nothing is linked. Rotating the key ends linkage: evaluations before and after no longer
match, and nothing can turn a pseudonym back into the id.

The monitor watches the cards that say no red flag was found (their rule is dropped when one is:
`unless: [red-flag]`) and that reassure (info, no referral), remove an order or refer routinely;
it listens for red-flag rules (those that derive `red-flag`, whose cards are critical).
"""

import hashlib
import hmac
from dataclasses import dataclass

from cds_service.knowledge import Knowledge, Rule

RED_FLAG = "red-flag"
"""The fact the knowledge base's red-flag rules derive (`derive: [red-flag]`)."""


@dataclass(frozen=True)
class Pseudonyms:
    """Keyed pseudonyms of patient and clinician ids (64 hex digits)."""

    key: bytes

    def patient(self, patient_id: str) -> str:
        return self._of("patient", patient_id)

    def clinician(self, user_id: str) -> str:
        return self._of("clinician", user_id)

    def _of(self, kind: str, identifier: str) -> str:
        message = f"{kind}\x00{identifier}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()


def is_red_flag(rule: Rule) -> bool:
    """A red-flag rule: it derives `red-flag`."""
    return RED_FLAG in rule.derive


def watches(rule: Rule) -> bool:
    """The monitor follows this rule's cards: they say no red flag was found, and they reassure,
    remove an order or refer routinely."""
    card = rule.card
    if card is None or RED_FLAG not in rule.unless or is_red_flag(rule):
        return False
    reassures = card.indicator == "info" and card.refer is None
    routine = card.refer is not None and card.refer.priority == "routine"
    return reassures or card.remove_order or routine


@dataclass(frozen=True)
class Monitor:
    """What the safety monitor reads of the knowledge base, and its window."""

    watched: frozenset[str]
    red_flags: frozenset[str]
    window_days: float

    @classmethod
    def of(cls, knowledge: Knowledge, window_days: float) -> "Monitor":
        rules = knowledge.rules.values()
        return cls(
            frozenset(rule.id for rule in rules if watches(rule)),
            frozenset(rule.id for rule in rules if is_red_flag(rule)),
            window_days,
        )
