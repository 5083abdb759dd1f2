"""JWT ids seen, so a token is accepted once across every worker and replica.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jwt_ids",
        sa.Column("issuer", sa.String(300), primary_key=True),
        sa.Column("jti", sa.String(300), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("jwt_ids")
