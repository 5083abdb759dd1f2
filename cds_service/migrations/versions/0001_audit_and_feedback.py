"""Evaluation audit, issued cards and CDS Hooks feedback.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("hook_instance", sa.String(200), nullable=False),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("ruleset_version", sa.String(32), nullable=False),
        sa.Column("rules_fired", sa.JSON, nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "cards",
        sa.Column("uuid", sa.String(64), primary_key=True),
        sa.Column("evaluation_id", sa.Integer, sa.ForeignKey("evaluations.id"), nullable=False),
        sa.Column("rule_id", sa.String(100), nullable=False),
        sa.Column("indicator", sa.String(16), nullable=False),
        sa.Column("summary", sa.String(200), nullable=False),
    )
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("card_uuid", sa.String(64), sa.ForeignKey("cards.uuid"), nullable=False),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("outcome_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_suggestions", sa.JSON, nullable=True),
        sa.Column("override_reason", sa.JSON, nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("card_uuid", "outcome", "outcome_timestamp", name="feedback_once"),
    )


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("cards")
    op.drop_table("evaluations")
