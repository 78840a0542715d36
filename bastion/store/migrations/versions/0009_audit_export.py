"""where each audit-event sink got to (issue 23, item 4)

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # reserved: the work that fills it in is under way (the chain stays linear meanwhile)


def downgrade() -> None:
    pass
