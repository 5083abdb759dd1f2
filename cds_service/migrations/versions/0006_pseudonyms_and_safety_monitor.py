"""Pseudonymous linkage and the safety monitor; the report reads the cards alone.

Evaluations keep keyed pseudonyms of their patient and clinician; cards keep their evaluation's
service, time, week (Monday, UTC) and clinician pseudonym, and their outcome settled from their
feedback (as `storage.settled` does), filled here for the cards already stored; the monitor's
follow-ups and possible misses get their tables.

Revision ID: 0006
Revises: 0005
"""

from itertools import groupby
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_WEEK = {  # the Monday (UTC) of a timestamp's week, in each dialect
    "postgresql": "CAST(date_trunc('week', timezone('UTC', e.created_at)) AS DATE)",
    "sqlite": "date(e.created_at, 'weekday 0', '-6 days')",
}


def upgrade() -> None:
    with op.batch_alter_table("evaluations") as batch:
        batch.add_column(sa.Column("patient_key", sa.String(64), nullable=True))
        batch.add_column(sa.Column("clinician_key", sa.String(64), nullable=True))
    op.create_index("evaluations_patient_key", "evaluations", ["patient_key", "created_at"])
    op.drop_index("evaluations_created_at", "evaluations")
    op.create_index("evaluations_created_at", "evaluations", ["created_at", "service"])
    # Added, never altered: on SQLite altering would rebuild `cards`, which feedback references.
    with op.batch_alter_table("cards") as batch:
        batch.add_column(sa.Column("service", sa.String(64), nullable=True))
        batch.add_column(sa.Column("created_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("week", sa.Date, nullable=True))
        batch.add_column(sa.Column("clinician_key", sa.String(64), nullable=True))
        batch.add_column(sa.Column("outcome", sa.String(16), nullable=True))
        batch.add_column(sa.Column("first_feedback_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("reason_code", sa.String(200), nullable=True))
        batch.add_column(sa.Column("reason_display", sa.String(500), nullable=True))
        # a literal default ('0' is false in both): an expression would make SQLite rebuild
        batch.add_column(sa.Column("explained", sa.Boolean, nullable=False, server_default="0"))
    _settle_outcomes()
    week = _WEEK[op.get_bind().dialect.name]
    for column, value in [("service", "e.service"), ("created_at", "e.created_at"), ("week", week)]:
        op.execute(
            f"UPDATE cards SET {column} = "
            f"(SELECT {value} FROM evaluations e WHERE e.id = cards.evaluation_id)"
        )
    op.create_index(
        "cards_report",
        "cards",
        [
            *("created_at", "week", "rule_id", "service", "indicator", "silent", "clinician_key"),
            *("outcome", "first_feedback_at", "reason_code", "reason_display", "explained"),
        ],
    )
    op.create_table(
        "follow_ups",
        sa.Column("card_uuid", sa.String(64), sa.ForeignKey("cards.uuid"), primary_key=True),
        sa.Column("rule_id", sa.String(100), nullable=False),
        sa.Column("card_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evaluation_id", sa.Integer, sa.ForeignKey("evaluations.id"), nullable=False),
        sa.Column("followed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("follow_ups_card_at", "follow_ups", ["card_at"])
    op.create_table(
        "possible_misses",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("card_uuid", sa.String(64), sa.ForeignKey("cards.uuid"), nullable=False),
        sa.Column("rule_id", sa.String(100), nullable=False),
        sa.Column("card_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evaluation_id", sa.Integer, sa.ForeignKey("evaluations.id"), nullable=False),
        sa.Column("found_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("red_flag_rule", sa.String(100), nullable=False),
        sa.Column("evidence", sa.JSON, nullable=False),
        sa.UniqueConstraint("card_uuid", "red_flag_rule", name="possible_miss_once"),
    )
    op.create_index("possible_misses_card_at", "possible_misses", ["card_at"])


def _settled(rows: list[Any]) -> dict[str, Any]:
    """A card's outcome from its feedback: the latest decides, an override winning a tie."""
    last = max(row.outcome_timestamp for row in rows)
    overrides = [r for r in rows if r.outcome_timestamp == last and r.outcome == "overridden"]
    deciding = max(overrides, key=lambda row: row.id) if overrides else None
    reason = (deciding.override_reason or {}) if deciding else {}
    coding = reason.get("reason") or {}
    return {
        "card": rows[0].card_uuid,
        "outcome": "overridden" if deciding else "accepted",
        "first_feedback_at": min(row.outcome_timestamp for row in rows),
        "reason_code": coding.get("code"),
        "reason_display": coding.get("display"),
        "explained": coding.get("code") is not None or reason.get("userComment") is not None,
    }


def _settle_outcomes() -> None:
    """Every answered card's outcome from its feedback, as the store keeps it from now on."""
    feedback = sa.table(
        "feedback",
        sa.column("id"),
        sa.column("card_uuid"),
        sa.column("outcome"),
        sa.column("outcome_timestamp", sa.DateTime(timezone=True)),
        sa.column("override_reason", sa.JSON),
    )
    cards = sa.table(
        "cards",
        *(sa.column(name) for name in ("uuid", "outcome", "reason_code", "reason_display")),
        sa.column("first_feedback_at", sa.DateTime(timezone=True)),
        sa.column("explained", sa.Boolean),
    )
    connection = op.get_bind()
    rows = connection.execute(sa.select(feedback).order_by(feedback.c.card_uuid)).all()
    update = cards.update().where(cards.c.uuid == sa.bindparam("card"))
    batch: list[dict[str, Any]] = []
    for _, answers in groupby(rows, key=lambda row: row.card_uuid):
        batch.append(_settled(list(answers)))
        if len(batch) == 10_000:
            connection.execute(update, batch)
            batch = []
    if batch:
        connection.execute(update, batch)


def downgrade() -> None:
    op.drop_table("possible_misses")
    op.drop_table("follow_ups")
    op.drop_index("cards_report", "cards")
    with op.batch_alter_table("cards") as batch:
        for column in (
            *("explained", "reason_display", "reason_code", "first_feedback_at", "outcome"),
            *("clinician_key", "week", "created_at", "service"),
        ):
            batch.drop_column(column)
    op.drop_index("evaluations_patient_key", "evaluations")
    op.drop_index("evaluations_created_at", "evaluations")
    op.create_index("evaluations_created_at", "evaluations", ["created_at"])
    with op.batch_alter_table("evaluations") as batch:
        batch.drop_column("clinician_key")
        batch.drop_column("patient_key")
