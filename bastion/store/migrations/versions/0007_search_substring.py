"""substring search of recordings (issue 23, item 5): filled in by its owner

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # reserved: the work that fills it in is under way (the chain stays linear meanwhile)


def downgrade() -> None:
    pass
