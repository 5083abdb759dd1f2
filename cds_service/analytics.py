"""Read-only analytics over the store for the CDS committee: what the rules did, what clinicians
did with their cards.

The report's contract (every figure is over the evaluations whose `created_at` falls in
[`since`, `until`), UTC dates; a missing bound is open):

- `evaluations`: evaluations audited, with or without cards.
- `cards`: cards issued (`cards.silent` false).
- `silent_cards`: would-be cards of silent rules, audited but never shown, so never with feedback.
- A card's outcome is its latest feedback by `outcome_timestamp` (on a tie, the one received
  last): `accepted` or `overridden`; an issued card with no feedback is `ignored`. Outcomes count
  issued cards only, so accepted + overridden + ignored = cards.
- `acceptance_rate` = accepted / cards and `override_rate` = overridden / cards, rounded to 3
  decimals; null when no card was issued.
- `mean_minutes_to_feedback`: the mean, over issued cards with feedback, of the first feedback's
  `outcome_timestamp` minus the evaluation's `created_at`, in minutes, rounded to 1 decimal;
  null when no card has feedback.
- `weeks`: per rule and week, the week being the Monday (UTC) of `created_at`'s week.
- `override_reasons`: from each overridden card's deciding (latest) feedback, counted by rule and
  reason code. An override with only a userComment has code null and display
  "free text (no coded reason)"; otherwise the display is the coding's display, or its code when
  it has none. An override with neither reason nor comment is not counted there. The top 10 per
  rule by count (ties by code).
- `mode`: the rule's current mode from `modes` ("active" or "silent"), null when not given.

Lists are sorted by name (rules by id, weeks by week then rule); a rule, service or indicator
appears when it has rows in the window.
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

from cds_service.storage import cards, evaluations, feedback

FREE_TEXT = "free text (no coded reason)"
"""The display of overrides explained by a userComment only."""

TOP_REASONS = 10
"""Override reasons kept per rule."""


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
    mode: str | None
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


class Report(TypedDict):
    since: str | None
    until: str | None
    totals: Totals
    services: list[ServiceRow]
    rules: list[RuleRow]
    indicators: list[IndicatorRow]
    weeks: list[WeekRow]
    override_reasons: list[ReasonRow]


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


@dataclass
class _Tally:
    """Counts summed over grouped rows (see `_card_counts`)."""

    cards: int = 0
    silent_cards: int = 0
    accepted: int = 0
    overridden: int = 0
    ignored: int = 0
    answered: int = 0
    minutes: float = 0.0

    def add(self, row: sa.Row[Any]) -> None:
        self.cards += row.cards
        self.silent_cards += row.silent_cards
        self.accepted += row.accepted
        self.overridden += row.overridden
        self.ignored += row.ignored
        self.answered += row.answered
        self.minutes += row.minutes or 0.0

    def rate(self, count: int) -> float | None:
        return round(count / self.cards, 3) if self.cards else None

    def mean_minutes(self) -> float | None:
        return round(self.minutes / self.answered, 1) if self.answered else None


def _window(since: date | None, until: date | None) -> list[sa.ColumnElement[bool]]:
    """The conditions on `evaluations.created_at` for [since, until) in UTC."""
    created = evaluations.c.created_at
    bounds = []
    if since is not None:
        bounds.append(created >= datetime.combine(since, time(), UTC))
    if until is not None:
        bounds.append(created < datetime.combine(until, time(), UTC))
    return bounds


def _week(dialect: str) -> sa.ColumnElement[date]:
    """The Monday (UTC) of `evaluations.created_at`'s week."""
    created = evaluations.c.created_at
    if dialect == "postgresql":
        monday = sa.func.date_trunc("week", sa.func.timezone("UTC", created))
        return sa.cast(monday, sa.Date)
    if dialect == "sqlite":  # naive UTC text: forward to Sunday (or stay), back to Monday
        return sa.func.date(created, "weekday 0", "-6 days", type_=sa.Date)
    raise NotImplementedError(dialect)


def _minutes(dialect: str, start: sa.ColumnElement[Any], end: sa.ColumnElement[Any]) -> Any:
    """Minutes from `start` to `end`, a float."""
    if dialect == "postgresql":
        return sa.func.date_part("epoch", end - start, type_=sa.Float) / 60.0
    if dialect == "sqlite":
        return (sa.func.julianday(end) - sa.func.julianday(start)) * 1440.0
    raise NotImplementedError(dialect)


def _deciding(*columns: sa.ColumnElement[Any]) -> sa.Subquery:
    """Every feedback row with `place` 1 for each card's deciding (latest) one, the card's
    `first_at` (first outcome_timestamp), and `columns` of the feedback row."""
    by_card = feedback.c.card_uuid
    latest_first = (feedback.c.outcome_timestamp.desc(), feedback.c.id.desc())
    return sa.select(
        by_card,
        feedback.c.outcome,
        sa.func.row_number().over(partition_by=by_card, order_by=latest_first).label("place"),
        sa.func.min(feedback.c.outcome_timestamp).over(partition_by=by_card).label("first_at"),
        *columns,
    ).subquery("deciding")


def _issued_with_deciding(deciding: sa.Subquery) -> sa.Join:
    """Evaluations, their cards and each card's deciding feedback (if any)."""
    on_card = sa.and_(deciding.c.card_uuid == cards.c.uuid, deciding.c.place == 1)
    return evaluations.join(cards, cards.c.evaluation_id == evaluations.c.id).outerjoin(
        deciding, on_card
    )


def _card_counts(
    connection: sa.Connection, since: date | None, until: date | None
) -> list[sa.Row[Any]]:
    """Card counts grouped by week, rule, service and indicator."""
    dialect = connection.dialect.name
    deciding = _deciding()
    issued = sa.not_(cards.c.silent)
    outcome = deciding.c.outcome

    def count(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        return sa.func.count().filter(condition)

    week = _week(dialect).label("week")
    minutes = _minutes(dialect, evaluations.c.created_at, deciding.c.first_at)
    query = (
        sa.select(
            week,
            cards.c.rule_id.label("rule"),
            evaluations.c.service,
            cards.c.indicator,
            count(issued).label("cards"),
            count(cards.c.silent).label("silent_cards"),
            count(issued & (outcome == "accepted")).label("accepted"),
            count(issued & (outcome == "overridden")).label("overridden"),
            count(issued & outcome.is_(None)).label("ignored"),
            count(issued & outcome.is_not(None)).label("answered"),
            sa.func.sum(minutes).filter(issued).label("minutes"),
        )
        .select_from(_issued_with_deciding(deciding))
        .where(*_window(since, until))
        .group_by(week, cards.c.rule_id, evaluations.c.service, cards.c.indicator)
    )
    return list(connection.execute(query))


def _evaluation_counts(
    connection: sa.Connection, since: date | None, until: date | None
) -> dict[str, int]:
    """Evaluations per service."""
    query = (
        sa.select(evaluations.c.service, sa.func.count().label("evaluations"))
        .where(*_window(since, until))
        .group_by(evaluations.c.service)
    )
    return {row.service: row.evaluations for row in connection.execute(query)}


def _override_reasons(
    connection: sa.Connection, since: date | None, until: date | None
) -> list[ReasonRow]:
    """The top override reasons per rule (see the module docstring)."""
    reason = feedback.c.override_reason
    deciding = _deciding(
        reason[("reason", "code")].as_string().label("code"),
        reason[("reason", "display")].as_string().label("display"),
        reason["userComment"].as_string().label("comment"),
    )
    code, rule, overrides = deciding.c.code, cards.c.rule_id, sa.func.count()
    ranked = (
        sa.select(
            rule.label("rule"),
            code,
            sa.func.max(deciding.c.display).label("display"),
            overrides.label("overrides"),
            sa.func.row_number()
            .over(partition_by=rule, order_by=(overrides.desc(), sa.func.coalesce(code, "")))
            .label("rank"),
        )
        .select_from(_issued_with_deciding(deciding))
        .where(
            *_window(since, until),
            sa.not_(cards.c.silent),
            deciding.c.outcome == "overridden",
            code.is_not(None) | deciding.c.comment.is_not(None),
        )
        .group_by(rule, code)
        .subquery("ranked")
    )
    query = (
        sa.select(ranked.c.rule, ranked.c.code, ranked.c.display, ranked.c.overrides)
        .where(ranked.c.rank <= TOP_REASONS)
        .order_by(ranked.c.rule, ranked.c.overrides.desc(), sa.func.coalesce(ranked.c.code, ""))
    )
    return [
        {
            "rule": row.rule,
            "code": row.code,
            "display": FREE_TEXT if row.code is None else row.display or row.code,
            "count": row.overrides,
        }
        for row in connection.execute(query)
    ]


def _tallies(rows: list[sa.Row[Any]], *keys: str) -> dict[tuple[Any, ...], _Tally]:
    """The grouped rows summed by `keys` (column names), sorted by key."""
    tallies: dict[tuple[Any, ...], _Tally] = {}
    for row in rows:
        tallies.setdefault(tuple(row._mapping[key] for key in keys), _Tally()).add(row)
    return dict(sorted(tallies.items()))


def report(
    engine: sa.Engine,
    since: date | None,
    until: date | None,
    modes: Mapping[str, str] | None = None,
) -> Report:
    """The committee's report for evaluations created in [since, until) (UTC dates)."""
    with engine.connect() as connection:
        rows = _card_counts(connection, since, until)
        evaluated = _evaluation_counts(connection, since, until)
        reasons = _override_reasons(connection, since, until)
    modes = modes or {}
    total = _tallies(rows).get((), _Tally())
    by_service = _tallies(rows, "service")
    return {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "totals": {
            "evaluations": sum(evaluated.values()),
            "cards": total.cards,
            "silent_cards": total.silent_cards,
            "accepted": total.accepted,
            "overridden": total.overridden,
            "ignored": total.ignored,
        },
        "services": [
            {
                "service": service,
                "evaluations": count,
                "cards": by_service.get((service,), _Tally()).cards,
                "silent_cards": by_service.get((service,), _Tally()).silent_cards,
            }
            for service, count in sorted(evaluated.items())
        ],
        "rules": [
            {
                "rule": rule,
                "mode": modes.get(rule),
                "cards": tally.cards,
                "silent_cards": tally.silent_cards,
                "accepted": tally.accepted,
                "overridden": tally.overridden,
                "ignored": tally.ignored,
                "acceptance_rate": tally.rate(tally.accepted),
                "override_rate": tally.rate(tally.overridden),
                "mean_minutes_to_feedback": tally.mean_minutes(),
            }
            for (rule,), tally in _tallies(rows, "rule").items()
        ],
        "indicators": [
            {
                "indicator": indicator,
                "cards": tally.cards,
                "accepted": tally.accepted,
                "overridden": tally.overridden,
                "ignored": tally.ignored,
            }
            for (indicator,), tally in _tallies(rows, "indicator").items()
            if tally.cards
        ],
        "weeks": [
            {
                "week": week.isoformat(),
                "rule": rule,
                "cards": tally.cards,
                "silent_cards": tally.silent_cards,
                "accepted": tally.accepted,
                "overridden": tally.overridden,
                "ignored": tally.ignored,
            }
            for (week, rule), tally in _tallies(rows, "week", "rule").items()
        ],
        "override_reasons": reasons,
    }


def _iso_utc(moment: datetime) -> str:
    """An ISO timestamp in UTC (SQLite returns naive UTC, PostgreSQL the session's zone)."""
    aware = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return aware.isoformat()


def feedback_rows(
    engine: sa.Engine, since: date | None, until: date | None, limit: int, offset: int
) -> list[FeedbackRow]:
    """Every feedback row on cards of evaluations created in [since, until), newest
    `outcome_timestamp` first, a page of `limit` rows after `offset` (for an export)."""
    query = (
        sa.select(
            feedback.c.card_uuid,
            cards.c.rule_id,
            evaluations.c.service,
            cards.c.indicator,
            feedback.c.outcome,
            feedback.c.outcome_timestamp,
            feedback.c.override_reason,
            feedback.c.accepted_suggestions,
        )
        .select_from(
            feedback.join(cards, cards.c.uuid == feedback.c.card_uuid).join(
                evaluations, evaluations.c.id == cards.c.evaluation_id
            )
        )
        .where(*_window(since, until))
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
    ]
    return "\n".join(lines) + "\n"


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
