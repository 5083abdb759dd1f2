"""Read-only analytics over the store for the CDS committee: what the rules did, what clinicians
did with their cards.

The report's contract (every figure is over the evaluations whose `created_at` falls in
[`since`, `until`), UTC dates; a missing bound is open):

- `evaluations`: evaluations audited, with or without cards.
- `cards`: cards issued (`cards.silent` false).
- `silent_cards`: would-be cards of silent rules, audited but never shown, so never with feedback.
- A card's outcome is its latest feedback by `outcome_timestamp`, `accepted` or `overridden`
  (an acceptance and an override at the same instant count as overridden: arrival order within
  a batch means nothing), kept on the card as feedback arrives (`storage.settled`); an issued
  card with no feedback is `ignored`. Outcomes count issued cards only, so accepted +
  overridden + ignored = cards.
- `acceptance_rate` = accepted / cards and `override_rate` = overridden / cards, rounded to 3
  decimals; null when no card was issued.
- `mean_minutes_to_feedback`: the mean, over issued cards with feedback, of the first feedback's
  `outcome_timestamp` minus the evaluation's `created_at`, in minutes, rounded to 1 decimal;
  null when no card has feedback.
- `weeks`: per rule and week, the week being the Monday (UTC) of `created_at`'s week.
- `override_reasons`: from each overridden card's deciding (latest) feedback, counted by rule and
  reason code. An override with only a userComment has code null and display
  "free text (no coded reason)"; otherwise the display is the coding's display (the greatest
  when they differ), or its code when it has none. An override with neither reason nor comment
  is not counted there. The top 10 per rule by count (ties by code).
- `mode`, `title`, `indicator`, `advice_only`: the rule's current mode ("active" or "silent"),
  title, card indicator and whether its card has no suggestion (advice only: nothing to accept,
  so its acceptance rate ranks apart), from `rules`; null when not given (a rule no longer in the
  knowledge base).
- `linked`: a pseudonym key is configured (`CDS_PSEUDONYM_KEY`); without one no evaluation is
  linked to another, so `safety` and `clinicians` only hold what was linked before.
- `safety`, per watched rule (`safety.py`), over its cards in the window: `followed_up`, the cards
  whose patient was evaluated again within `window_days`; `possible_misses`, those followed by an
  evaluation where a red-flag rule fired; `miss_rate` = possible_misses / followed_up (3 decimals),
  to be read with its count. Silent cards count too (a rule is judged before it goes live).
- `clinicians`, per clinician pseudonym (`context.userId`, keyed) and rule, over issued cards:
  `cards`, `accepted`, `overridden`, `ignored` as above, and for rules whose card removes an order
  `removed_share` (accepted / cards) and `kept_share` (overridden / cards, kept against the
  advice); a cell of fewer than `min_cell` cards shows no numbers (`suppressed`).

Lists are sorted by name (rules by id, weeks by week then rule, clinicians by pseudonym then
rule); a rule or service appears when it has rows in the window, an indicator when it has issued
cards.

The report is one SQL statement (one snapshot of the store) over the cards alone (they carry
their evaluation's time, week, service and clinician, and their outcome, all in one index): the
window's cards are counted once, by week, rule, service, indicator and override reason, and that
small result is summed by each grouping the report shows; the clinicians' and the monitor's
counts are parts of the same statement; Python only shapes the rows.
"""

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, Literal

import sqlalchemy as sa
from typing_extensions import TypedDict  # pydantic reads these (API responses) on Python 3.11

from cds_service.knowledge import Knowledge
from cds_service.storage import cards, evaluations, feedback, follow_ups, possible_misses

FREE_TEXT = "free text (no coded reason)"
"""The display of overrides explained by a userComment only."""

TOP_REASONS = 10
"""Override reasons kept per rule."""

MIN_CELL = 10
"""Fewer cards than this, per clinician and rule, show no numbers."""


@dataclass(frozen=True)
class RuleInfo:
    """What the report says of a rule besides its counts."""

    title: str
    mode: str
    removes_order: bool = False
    """Its card advises removing the order (imaging, a surgeon referral)."""
    indicator: str | None = None
    suggests: bool = True
    """Its card has a suggestion to accept (a referral or removing the order); an advice-only
    card cannot be accepted in the sense the others are, so it ranks apart."""


def rule_book(knowledge: Knowledge, modes: Mapping[str, str]) -> dict[str, RuleInfo]:
    """Per rule with a card: its title, current mode (from `modes`), its card's indicator and
    what the card suggests."""
    return {
        rule.id: RuleInfo(
            rule.title,
            modes.get(rule.id, rule.mode),
            rule.card.remove_order,
            rule.card.indicator,
            bool(rule.card.referrals) or rule.card.remove_order,
        )
        for rule in knowledge.rules.values()
        if rule.card is not None
    }


class Totals(TypedDict):
    evaluations: int
    cards: int
    silent_cards: int
    accepted: int
    overridden: int
    ignored: int


class ServiceRow(TypedDict):
    service: str
    evaluations: int
    cards: int
    silent_cards: int


class RuleRow(TypedDict):
    rule: str
    title: str | None
    mode: str | None
    indicator: str | None
    advice_only: bool | None
    cards: int
    silent_cards: int
    accepted: int
    overridden: int
    ignored: int
    acceptance_rate: float | None
    override_rate: float | None
    mean_minutes_to_feedback: float | None


class IndicatorRow(TypedDict):
    indicator: str
    cards: int
    accepted: int
    overridden: int
    ignored: int


class WeekRow(TypedDict):
    week: str
    rule: str
    cards: int
    silent_cards: int
    accepted: int
    overridden: int
    ignored: int


class ReasonRow(TypedDict):
    rule: str
    code: str | None
    display: str
    count: int


class SafetyRow(TypedDict):
    rule: str
    title: str | None
    followed_up: int
    possible_misses: int
    miss_rate: float | None


class Safety(TypedDict):
    window_days: float
    rules: list[SafetyRow]


class ClinicianRow(TypedDict):
    clinician: str
    rule: str
    title: str | None
    suppressed: bool
    """Fewer than `min_cell` cards: every number below is null."""
    cards: int | None
    accepted: int | None
    overridden: int | None
    ignored: int | None
    removed_share: float | None
    kept_share: float | None


class Clinicians(TypedDict):
    min_cell: int
    rows: list[ClinicianRow]


class Report(TypedDict):
    since: str | None
    until: str | None
    linked: bool
    totals: Totals
    services: list[ServiceRow]
    rules: list[RuleRow]
    indicators: list[IndicatorRow]
    weeks: list[WeekRow]
    override_reasons: list[ReasonRow]
    safety: Safety
    clinicians: Clinicians


class ClinicianReport(TypedDict):
    """One clinician's feedback, beside every clinician's together: no other one is named."""

    clinician: str
    since: str | None
    until: str | None
    min_cell: int
    rules: list[ClinicianRow]
    all_clinicians: list[ClinicianRow]


class SafetyCase(TypedDict):
    """A possible miss for review: the earlier card and what was found since (no patient id)."""

    card: str
    rule: str
    title: str | None
    indicator: str
    summary: str
    card_date: str
    found_date: str
    days_later: int
    red_flag: str
    red_flag_title: str | None
    evidence: list[dict[str, str | None]]


class FeedbackRow(TypedDict):
    card: str
    rule: str
    service: str
    indicator: str
    outcome: str
    outcome_timestamp: str
    reason_code: str | None
    reason_display: str | None
    comment: str | None
    accepted_suggestions: list[str]


_COUNTS = ("cards", "silent_cards", "accepted", "overridden", "ignored", "answered")
_SUMS = (*_COUNTS, "minutes")
"""The columns of `_fine` that every grouping of the report sums."""

_REASON_COLUMNS = ("rule", "code", "display", "overridden")
"""The columns of an override reason's row (`overridden` holds its count)."""

_COLUMNS: dict[str, type[sa.types.TypeEngine[Any]]] = {
    "week": sa.Date,
    **dict.fromkeys(["rule", "service", "indicator", "code", "display", "clinician"], sa.String),
    **dict.fromkeys(["evaluations", *_COUNTS, "followed_up", "misses"], sa.Integer),
    "minutes": sa.Float,
}
"""The columns every part of the report's one statement selects (a typed NULL where it has
none: PostgreSQL matches the parts' types)."""


def _window(
    created: sa.ColumnElement[datetime], since: date | None, until: date | None
) -> list[sa.ColumnElement[bool]]:
    """The conditions on a timestamp column for [since, until) in UTC."""
    bounds = []
    if since is not None:
        bounds.append(created >= datetime.combine(since, time(), UTC))
    if until is not None:
        bounds.append(created < datetime.combine(until, time(), UTC))
    return bounds


def _minutes(dialect: str, start: sa.ColumnElement[Any], end: sa.ColumnElement[Any]) -> Any:
    """Minutes from `start` to `end`, a float."""
    if dialect == "postgresql":
        return sa.func.date_part("epoch", end - start, type_=sa.Float) / 60.0
    if dialect == "sqlite":
        return (sa.func.julianday(end) - sa.func.julianday(start)) * 1440.0
    raise NotImplementedError(dialect)


def _count(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
    return sa.func.count().filter(condition)


_ISSUED = sa.not_(cards.c.silent)
_ANSWERED = cards.c.outcome.is_not(None)
_OVERRIDDEN = cards.c.outcome == "overridden"
"""A card's outcome, kept on it as its feedback arrives (`storage.settled`)."""


def _fine(dialect: str, since: date | None, until: date | None) -> sa.CTE:
    """Cards of the window counted by week, rule, service, indicator and override reason code."""
    minutes = _minutes(dialect, cards.c.created_at, cards.c.first_feedback_at)
    code = cards.c.reason_code
    return (
        sa.select(
            cards.c.week,
            cards.c.rule_id.label("rule"),
            cards.c.service,
            cards.c.indicator,
            code.label("code"),
            sa.func.max(cards.c.reason_display).label("display"),
            _count(_ISSUED).label("cards"),
            _count(cards.c.silent).label("silent_cards"),
            _count(_ISSUED & _ANSWERED & ~_OVERRIDDEN).label("accepted"),
            _count(_ISSUED & _OVERRIDDEN).label("overridden"),
            _count(_ISSUED & ~_ANSWERED).label("ignored"),
            _count(_ISSUED & _ANSWERED).label("answered"),
            sa.func.sum(minutes).filter(_ISSUED).label("minutes"),
            _count(_ISSUED & _OVERRIDDEN & cards.c.explained).label("explained"),
        )
        .where(*_window(cards.c.created_at, since, until))
        .group_by(cards.c.week, cards.c.rule_id, cards.c.service, cards.c.indicator, code)
        .cte("fine")
        .prefix_with("MATERIALIZED")  # read by every part below: computed once
    )


def _by_clinician(
    since: date | None, until: date | None, clinician: str | None, each: bool
) -> sa.Select[Any]:
    """Issued cards of linked clinicians counted by rule, and by clinician too when `each`;
    only `clinician`'s when given."""
    chosen = cards.c.clinician_key if each else sa.cast(sa.null(), sa.String)
    only = [] if clinician is None else [cards.c.clinician_key == clinician]
    keys = [cards.c.clinician_key, cards.c.rule_id] if each else [cards.c.rule_id]
    return (
        sa.select(
            chosen.label("clinician"),
            cards.c.rule_id.label("rule"),
            sa.func.count().label("cards"),
            _count(_ANSWERED & ~_OVERRIDDEN).label("accepted"),
            _count(_OVERRIDDEN).label("overridden"),
            _count(~_ANSWERED).label("ignored"),
        )
        .where(
            _ISSUED,
            cards.c.clinician_key.is_not(None),
            *only,
            *_window(cards.c.created_at, since, until),
        )
        .group_by(*keys)
    )


def _part(kind: str, values: Mapping[str, Any]) -> list[sa.ColumnElement[Any]]:
    """The select list of one part of the union: `kind`, then `_COLUMNS` (NULL when absent)."""
    return [
        sa.literal(kind).label("kind"),
        *(
            values.get(name, sa.cast(sa.null(), type_)).label(name)
            for name, type_ in _COLUMNS.items()
        ),
    ]


def _safety(since: date | None, until: date | None) -> list[sa.Select[Any]]:
    """Per rule, its cards of the window followed up, and those possibly missed."""
    misses = sa.func.count(sa.distinct(possible_misses.c.card_uuid))
    return [
        sa.select(
            *_part("followed", {"rule": follow_ups.c.rule_id, "followed_up": sa.func.count()})
        )
        .where(*_window(follow_ups.c.card_at, since, until))
        .group_by(follow_ups.c.rule_id),
        sa.select(*_part("missed", {"rule": possible_misses.c.rule_id, "misses": misses}))
        .where(*_window(possible_misses.c.card_at, since, until))
        .group_by(possible_misses.c.rule_id),
    ]


def _statement(
    dialect: str, since: date | None, until: date | None
) -> sa.CompoundSelect[*tuple[Any, ...]]:
    """The whole report as one statement (one snapshot): `_fine` summed by each grouping the
    report shows, the top override reasons per rule, the evaluations per service, the cards per
    clinician and rule, and the monitor's counts per rule."""
    fine = _fine(dialect, since, until)

    def total(name: str) -> sa.ColumnElement[Any]:
        return sa.cast(sa.func.coalesce(sa.func.sum(fine.c[name]), 0), _COLUMNS[name])

    def rollup(kind: str, *keys: str) -> sa.Select[Any]:
        values = {key: fine.c[key] for key in keys} | {name: total(name) for name in _SUMS}
        return sa.select(*_part(kind, values)).group_by(*(fine.c[key] for key in keys))

    overrides = sa.cast(sa.func.sum(fine.c.explained), sa.Integer)
    ranked = (
        sa.select(
            fine.c.rule,
            fine.c.code,
            sa.func.max(fine.c.display).label("display"),
            overrides.label("overridden"),
            sa.func.row_number()
            .over(
                partition_by=fine.c.rule,
                order_by=(overrides.desc(), sa.func.coalesce(fine.c.code, "")),
            )
            .label("place"),
        )
        .where(fine.c.explained > 0)
        .group_by(fine.c.rule, fine.c.code)
        .subquery("ranked")
    )
    evaluated = sa.func.count()
    clinicians = _by_clinician(since, until, None, each=True).subquery("clinicians")
    return sa.union_all(
        rollup("total"),
        rollup("service", "service"),
        rollup("rule", "rule"),
        rollup("indicator", "indicator"),
        rollup("week", "week", "rule"),
        sa.select(*_part("reason", {name: ranked.c[name] for name in _REASON_COLUMNS})).where(
            ranked.c.place <= TOP_REASONS
        ),
        sa.select(
            *_part("evaluations", {"service": evaluations.c.service, "evaluations": evaluated})
        )
        .where(*_window(evaluations.c.created_at, since, until))
        .group_by(evaluations.c.service),
        sa.select(*_part("clinician", dict(clinicians.c))),
        *_safety(since, until),
    )


def _rate(count: int, cards: int) -> float | None:
    return round(count / cards, 3) if cards else None


_WORK_MEM_KB = 32 * 1024
"""Memory for the report's groupings on PostgreSQL: a year's finest one (~35,000 groups) is
hashed in ~20 MB; within the default 4 MB the server sorts the window's cards on disk instead."""


def _run(engine: sa.Engine, statement: sa.Executable) -> list[sa.Row[Any]]:
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(sa.text("SET LOCAL jit = off"))  # compiling outlasts the run
            connection.execute(  # raised for this transaction, never lowered
                sa.text(
                    "SELECT set_config('work_mem', :kb || 'kB', true) FROM pg_settings"
                    " WHERE name = 'work_mem' AND CAST(setting AS integer) < :kb"
                ),
                {"kb": _WORK_MEM_KB},
            )
        return list(connection.execute(statement).all())  # fetchall: 10x fetchone's speed


def _clinician_row(
    row: Any, rules: Mapping[str, RuleInfo], min_cell: int, clinician: str
) -> ClinicianRow:
    """A clinician's (or every clinician's) cards of one rule, hidden below `min_cell`."""
    info = rules.get(row.rule)
    shown = row.cards >= min_cell
    removes = shown and info is not None and info.removes_order
    return {
        "clinician": clinician,
        "rule": row.rule,
        "title": info.title if info else None,
        "suppressed": not shown,
        "cards": row.cards if shown else None,
        "accepted": row.accepted if shown else None,
        "overridden": row.overridden if shown else None,
        "ignored": row.ignored if shown else None,
        "removed_share": _rate(row.accepted, row.cards) if removes else None,
        "kept_share": _rate(row.overridden, row.cards) if removes else None,
    }


def report(
    engine: sa.Engine,
    since: date | None,
    until: date | None,
    rules: Mapping[str, RuleInfo] | None = None,
    *,
    linked: bool = False,
    window_days: float = 90,
    min_cell: int = MIN_CELL,
) -> Report:
    """The committee's report for evaluations created in [since, until) (UTC dates); `linked`
    says a pseudonym key is configured, `window_days` is the monitor's window."""
    parts: dict[str, list[sa.Row[Any]]] = {}
    for row in _run(engine, _statement(engine.dialect.name, since, until)):
        parts.setdefault(row.kind, []).append(row)
    (total,) = parts["total"]
    by_service = {row.service: row for row in parts.get("service", [])}
    rules = rules or {}

    def title(rule: str) -> str | None:
        return rules[rule].title if rule in rules else None

    missed = {row.rule: row.misses for row in parts.get("missed", [])}
    return {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "linked": linked,
        "totals": {
            "evaluations": sum(row.evaluations for row in parts.get("evaluations", [])),
            "cards": total.cards,
            "silent_cards": total.silent_cards,
            "accepted": total.accepted,
            "overridden": total.overridden,
            "ignored": total.ignored,
        },
        "services": [
            {
                "service": row.service,
                "evaluations": row.evaluations,
                "cards": by_service[row.service].cards if row.service in by_service else 0,
                "silent_cards": (
                    by_service[row.service].silent_cards if row.service in by_service else 0
                ),
            }
            for row in sorted(parts.get("evaluations", []), key=lambda row: row.service)
        ],
        "rules": [
            {
                "rule": row.rule,
                "title": title(row.rule),
                "mode": rules[row.rule].mode if row.rule in rules else None,
                "indicator": rules[row.rule].indicator if row.rule in rules else None,
                "advice_only": not rules[row.rule].suggests if row.rule in rules else None,
                "cards": row.cards,
                "silent_cards": row.silent_cards,
                "accepted": row.accepted,
                "overridden": row.overridden,
                "ignored": row.ignored,
                "acceptance_rate": _rate(row.accepted, row.cards),
                "override_rate": _rate(row.overridden, row.cards),
                "mean_minutes_to_feedback": (
                    round(row.minutes / row.answered, 1) if row.answered else None
                ),
            }
            for row in sorted(parts.get("rule", []), key=lambda row: row.rule)
        ],
        "indicators": [
            {
                "indicator": row.indicator,
                "cards": row.cards,
                "accepted": row.accepted,
                "overridden": row.overridden,
                "ignored": row.ignored,
            }
            for row in sorted(parts.get("indicator", []), key=lambda row: row.indicator)
            if row.cards
        ],
        "weeks": [
            {
                "week": row.week.isoformat(),
                "rule": row.rule,
                "cards": row.cards,
                "silent_cards": row.silent_cards,
                "accepted": row.accepted,
                "overridden": row.overridden,
                "ignored": row.ignored,
            }
            for row in sorted(parts.get("week", []), key=lambda row: (row.week, row.rule))
        ],
        "override_reasons": [
            {
                "rule": row.rule,
                "code": row.code,
                "display": FREE_TEXT if row.code is None else row.display or row.code,
                "count": row.overridden,
            }
            for row in sorted(
                parts.get("reason", []), key=lambda row: (row.rule, -row.overridden, row.code or "")
            )
        ],
        "safety": {
            "window_days": window_days,
            "rules": [
                {
                    "rule": row.rule,
                    "title": title(row.rule),
                    "followed_up": row.followed_up,
                    "possible_misses": missed.get(row.rule, 0),
                    "miss_rate": _rate(missed.get(row.rule, 0), row.followed_up),
                }
                for row in sorted(parts.get("followed", []), key=lambda row: row.rule)
            ],
        },
        "clinicians": {
            "min_cell": min_cell,
            "rows": [
                _clinician_row(row, rules, min_cell, row.clinician)
                for row in sorted(
                    parts.get("clinician", []), key=lambda row: (row.clinician, row.rule)
                )
            ],
        },
    }


def clinician_report(
    engine: sa.Engine,
    since: date | None,
    until: date | None,
    clinician: str,
    rules: Mapping[str, RuleInfo] | None = None,
    min_cell: int = MIN_CELL,
) -> ClinicianReport:
    """One clinician's cards per rule beside every linked clinician's together, for handing to
    that clinician: no other clinician is named or counted alone."""
    rules = rules or {}
    statement = sa.union_all(
        _by_clinician(since, until, clinician, each=True),
        _by_clinician(since, until, None, each=False),
    )
    rows = sorted(_run(engine, statement), key=lambda row: row.rule)
    return {
        "clinician": clinician,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "min_cell": min_cell,
        "rules": [_clinician_row(row, rules, min_cell, clinician) for row in rows if row.clinician],
        "all_clinicians": [
            _clinician_row(row, rules, min_cell, "all") for row in rows if not row.clinician
        ],
    }


def safety_cases(
    engine: sa.Engine,
    since: date | None,
    until: date | None,
    limit: int,
    offset: int,
    rules: Mapping[str, RuleInfo] | None = None,
) -> list[SafetyCase]:
    """The possible misses on cards issued in [since, until), most recently found first (a
    page): the earlier card, when, and the red flag found since with its evidence codes."""
    rules = rules or {}
    query = (
        sa.select(
            possible_misses.c.card_uuid,
            possible_misses.c.rule_id,
            cards.c.indicator,
            cards.c.summary,
            possible_misses.c.card_at,
            possible_misses.c.found_at,
            possible_misses.c.red_flag_rule,
            possible_misses.c.evidence,
        )
        .join(cards, cards.c.uuid == possible_misses.c.card_uuid)
        .where(*_window(possible_misses.c.card_at, since, until))
        .order_by(possible_misses.c.found_at.desc(), possible_misses.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    with engine.connect() as connection:
        rows = list(connection.execute(query))
    return [
        {
            "card": row.card_uuid,
            "rule": row.rule_id,
            "title": rules[row.rule_id].title if row.rule_id in rules else None,
            "indicator": row.indicator,
            "summary": row.summary,
            "card_date": _utc(row.card_at).date().isoformat(),
            "found_date": _utc(row.found_at).date().isoformat(),
            "days_later": (_utc(row.found_at) - _utc(row.card_at)).days,
            "red_flag": row.red_flag_rule,
            "red_flag_title": (
                rules[row.red_flag_rule].title if row.red_flag_rule in rules else None
            ),
            "evidence": list(row.evidence),
        }
        for row in rows
    ]


def _utc(moment: datetime) -> datetime:
    """A stored instant in UTC (SQLite returns naive UTC, PostgreSQL the session's zone)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _iso_utc(moment: datetime) -> str:
    """An ISO timestamp in UTC."""
    return _utc(moment).isoformat()


def feedback_rows(
    engine: sa.Engine, since: date | None, until: date | None, limit: int, offset: int
) -> list[FeedbackRow]:
    """Every feedback row on cards of evaluations created in [since, until), newest
    `outcome_timestamp` first, a page of `limit` rows after `offset` (for an export)."""
    query = (
        sa.select(
            feedback.c.card_uuid,
            cards.c.rule_id,
            cards.c.service,
            cards.c.indicator,
            feedback.c.outcome,
            feedback.c.outcome_timestamp,
            feedback.c.override_reason,
            feedback.c.accepted_suggestions,
        )
        .select_from(feedback.join(cards, cards.c.uuid == feedback.c.card_uuid))
        .where(*_window(cards.c.created_at, since, until))
        .order_by(feedback.c.outcome_timestamp.desc(), feedback.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    with engine.connect() as connection:
        rows = list(connection.execute(query))
    result: list[FeedbackRow] = []
    for row in rows:
        reason = row.override_reason or {}
        coding = reason.get("reason") or {}
        result.append(
            {
                "card": row.card_uuid,
                "rule": row.rule_id,
                "service": row.service,
                "indicator": row.indicator,
                "outcome": row.outcome,
                "outcome_timestamp": _iso_utc(row.outcome_timestamp),
                "reason_code": coding.get("code"),
                "reason_display": coding.get("display"),
                "comment": reason.get("userComment"),
                "accepted_suggestions": [s["id"] for s in row.accepted_suggestions or []],
            }
        )
    return result


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


def _aligned(header: list[str], rows: list[list[str]], left: int) -> list[str]:
    """Columns padded to their widest cell: the first `left` to the left, the rest right."""
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in [header, *rows]
    ]


def _table(report: Report) -> str:
    """A plain-text summary for the committee's minutes."""
    totals = report["totals"]
    period = f"{report['since'] or 'the start'} to {report['until'] or 'now'} (end excluded)"
    lines = [
        f"CDS report, {period}",
        f"{totals['evaluations']} evaluations, {totals['cards']} cards issued"
        f" ({totals['accepted']} accepted, {totals['overridden']} overridden,"
        f" {totals['ignored']} ignored), {totals['silent_cards']} silent cards",
        "",
        *_aligned(
            [
                "rule",
                "mode",
                "cards",
                "silent",
                "accepted",
                "overridden",
                "ignored",
                "accepted %",
                "overridden %",
                "minutes to feedback",
            ],
            [
                [
                    rule["rule"],
                    rule["mode"] or "-",
                    str(rule["cards"]),
                    str(rule["silent_cards"]),
                    str(rule["accepted"]),
                    str(rule["overridden"]),
                    str(rule["ignored"]),
                    _percent(rule["acceptance_rate"]),
                    _percent(rule["override_rate"]),
                    "-"
                    if rule["mean_minutes_to_feedback"] is None
                    else f"{rule['mean_minutes_to_feedback']:.1f}",
                ]
                for rule in report["rules"]
            ],
            left=2,
        ),
        "",
        "Top override reasons",
        *_aligned(
            ["rule", "reason", "count"],
            [
                [reason["rule"], reason["display"], str(reason["count"])]
                for reason in report["override_reasons"]
            ],
            left=2,
        ),
        "",
        f"Safety monitor: possible misses within {report['safety']['window_days']:g} days",
        *(
            []
            if report["linked"]
            else ["(no CDS_PSEUDONYM_KEY configured: evaluations are not linked)"]
        ),
        *_aligned(
            ["rule", "followed up", "possible misses", "miss %"],
            [
                [
                    row["rule"],
                    str(row["followed_up"]),
                    str(row["possible_misses"]),
                    _percent(row["miss_rate"]),
                ]
                for row in report["safety"]["rules"]
            ],
            left=1,
        ),
        "",
        f"Clinicians (pseudonyms; fewer than {report['clinicians']['min_cell']} cards: hidden)",
        *_clinician_lines(report["clinicians"]["rows"]),
    ]
    return "\n".join(lines) + "\n"


def _clinician_lines(rows: list[ClinicianRow]) -> list[str]:
    """Clinician rows aligned (pseudonyms shortened to 12 digits, `<min` when hidden)."""

    def cell(value: float | None, percent: bool = False) -> str:
        if value is None:
            return "-"
        return _percent(value) if percent else str(value)

    return _aligned(
        ["clinician", "rule", "cards", "accepted", "overridden", "ignored", "removed", "kept"],
        [
            [
                row["clinician"][:12],
                row["rule"],
                "<min" if row["suppressed"] else cell(row["cards"]),
                cell(row["accepted"]),
                cell(row["overridden"]),
                cell(row["ignored"]),
                cell(row["removed_share"], percent=True),
                cell(row["kept_share"], percent=True),
            ]
            for row in rows
        ],
        left=2,
    )


def render_clinician(report: ClinicianReport, fmt: Literal["table", "json", "csv"]) -> str:
    """One clinician's export: `json`, `csv` (their rows, then every clinician's) or `table`."""
    if fmt == "json":
        return json.dumps(report, indent=2) + "\n"
    rows = [*report["rules"], *report["all_clinicians"]]
    if fmt == "csv":
        out = io.StringIO()
        fields = list(ClinicianRow.__annotations__)
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    period = f"{report['since'] or 'the start'} to {report['until'] or 'now'} (end excluded)"
    return (
        "\n".join(
            [
                f"CDS feedback for clinician {report['clinician']}, {period}",
                f'("all": every clinician together; fewer than {report["min_cell"]} cards: hidden)',
                "",
                *_clinician_lines(rows),
            ]
        )
        + "\n"
    )


def _csv(report: Report) -> str:
    """The `rules` rows with a header line."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(RuleRow.__annotations__), lineterminator="\n")
    writer.writeheader()
    writer.writerows(report["rules"])
    return out.getvalue()


def render(report: Report, fmt: Literal["table", "json", "csv"]) -> str:
    """The report as text: `json` (all of it), `csv` (the per-rule rows) or `table`."""
    if fmt == "json":
        return json.dumps(report, indent=2) + "\n"
    if fmt == "csv":
        return _csv(report)
    return _table(report)
