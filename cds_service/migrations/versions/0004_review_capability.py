"""A capability per issued card: its referral-review link opens the card only with it.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("cards", sa.Column("capability_hash", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("cards", "capability_hash")
