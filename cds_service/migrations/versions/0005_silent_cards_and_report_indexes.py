"""Silent (shadow) cards are audited beside issued ones; indexes for the committee's report.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cards") as batch:
        batch.add_column(sa.Column("silent", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_index("evaluations_created_at", "evaluations", ["created_at"])
    op.create_index("cards_evaluation_id", "cards", ["evaluation_id"])


def downgrade() -> None:
    op.drop_index("cards_evaluation_id", "cards")
    op.drop_index("evaluations_created_at", "evaluations")
    with op.batch_alter_table("cards") as batch:
        batch.drop_column("silent")
