"""Keep each issued card's content, for the referral-review page.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("cards", sa.Column("content", sa.JSON, nullable=True))


def downgrade() -> None:
    op.drop_column("cards", "content")
