"""Read-only analytics over the store for the CDS committee: what the rules did, what clinicians
did with their cards.

The report's contract (every figure is over the evaluations whose `created_at` falls in
[`since`, `until`), UTC dates; a missing bound is open):

- `evaluations`: evaluations audited, with or without cards.
- `cards`: cards issued (`cards.silent` false).
- `silent_cards`: would-be cards of silent rules, audited but never shown, so never with feedback.
- A card's outcome is its latest feedback by `outcome_timestamp`, `accepted` or `overridden`
  (an acceptance and an override at the same instant count as overridden: arrival order within
  a batch means nothing); an issued card with no feedback is `ignored`. Outcomes count issued
  cards only, so accepted + overridden + ignored = cards.
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
- `mode`: the rule's current mode from `modes` ("active" or "silent"), null when not given.

Lists are sorted by name (rules by id, weeks by week then rule); a rule or service appears when
it has rows in the window, an indicator when it has issued cards.

The report is one SQL statement (one snapshot of the store): the window's cards are counted
once, by week, rule, service, indicator and override reason, and that small result is summed by
each grouping the report shows; Python only shapes the rows.
"""

import csv
import io
import json
from collections.abc import Mapping
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


_COUNTS = ("cards", "silent_cards", "accepted", "overridden", "ignored", "answered")
_SUMS = (*_COUNTS, "minutes")
"""The columns of `_fine` that every grouping of the report sums."""

_REASON_COLUMNS = ("rule", "code", "display", "overridden")
"""The columns of an override reason's row (`overridden` holds its count)."""

_COLUMNS: dict[str, type[sa.types.TypeEngine[Any]]] = {
    "week": sa.Date,
    **dict.fromkeys(["rule", "service", "indicator", "code", "display"], sa.String),
    **dict.fromkeys(["evaluations", *_COUNTS], sa.Integer),
    "minutes": sa.Float,
}
"""The columns every part of the report's one statement selects (a typed NULL where it has
none: PostgreSQL matches the parts' types)."""


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


def _fine(dialect: str, since: date | None, until: date | None) -> sa.CTE:
    """Cards of the window counted by week, rule, service, indicator and override reason code.

    A card's first and last feedback instants come from the feedback_once index; its deciding
    override, if any, is its override at the last instant (so an override wins a tie)."""
    answered = (
        sa.select(
            feedback.c.card_uuid,
            sa.func.min(feedback.c.outcome_timestamp).label("first_at"),
            sa.func.max(feedback.c.outcome_timestamp).label("last_at"),
        )
        .group_by(feedback.c.card_uuid)
        .subquery("answered")
    )
    override = feedback.alias("override")
    deciding = sa.and_(  # on the card's uuid: PostgreSQL then joins it last, 10% faster
        override.c.card_uuid == cards.c.uuid,
        override.c.outcome == "overridden",
        override.c.outcome_timestamp == answered.c.last_at,
    )
    issued = sa.not_(cards.c.silent)
    has_feedback = answered.c.card_uuid.is_not(None)
    overridden = override.c.id.is_not(None)
    reason = override.c.override_reason
    code = reason[("reason", "code")].as_string()
    explained = code.is_not(None) | reason["userComment"].as_string().is_not(None)

    def count(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        return sa.func.count().filter(condition)

    week = _week(dialect)
    minutes = _minutes(dialect, evaluations.c.created_at, answered.c.first_at)
    return (
        sa.select(
            week.label("week"),
            cards.c.rule_id.label("rule"),
            evaluations.c.service,
            cards.c.indicator,
            code.label("code"),
            sa.func.max(reason[("reason", "display")].as_string()).label("display"),
            count(issued).label("cards"),
            count(cards.c.silent).label("silent_cards"),
            count(issued & has_feedback & ~overridden).label("accepted"),
            count(issued & overridden).label("overridden"),
            count(issued & ~has_feedback).label("ignored"),
            count(issued & has_feedback).label("answered"),
            sa.func.sum(minutes).filter(issued).label("minutes"),
            count(issued & overridden & explained).label("explained"),
        )
        .select_from(
            evaluations.join(cards, cards.c.evaluation_id == evaluations.c.id)
            .outerjoin(answered, answered.c.card_uuid == cards.c.uuid)
            .outerjoin(override, deciding)
        )
        .where(*_window(since, until))
        .group_by(week, cards.c.rule_id, evaluations.c.service, cards.c.indicator, code)
        .cte("fine")
        .prefix_with("MATERIALIZED")  # read by every part below: computed once
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


def _statement(
    dialect: str, since: date | None, until: date | None
) -> sa.CompoundSelect[*tuple[Any, ...]]:
    """The whole report as one statement (one snapshot): `_fine` summed by each grouping the
    report shows, the top override reasons per rule, and the evaluations per service."""
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
        .where(*_window(since, until))
        .group_by(evaluations.c.service),
    )


def _rate(count: int, cards: int) -> float | None:
    return round(count / cards, 3) if cards else None


def report(
    engine: sa.Engine,
    since: date | None,
    until: date | None,
    modes: Mapping[str, str] | None = None,
) -> Report:
    """The committee's report for evaluations created in [since, until) (UTC dates)."""
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":  # JIT compiling would take longer than the run
            connection.execute(sa.text("SET LOCAL jit = off"))
        rows = connection.execute(_statement(engine.dialect.name, since, until)).all()
    parts: dict[str, list[sa.Row[Any]]] = {}
    for row in rows:
        parts.setdefault(row.kind, []).append(row)
    (total,) = parts["total"]
    by_service = {row.service: row for row in parts.get("service", [])}
    modes = modes or {}
    return {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
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
                "mode": modes.get(row.rule),
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
