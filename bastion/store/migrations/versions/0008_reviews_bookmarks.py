"""auditors' reviews, verdicts and bookmarks of sessions (issue 23, item 2)

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # reserved: the work that fills it in is under way (the chain stays linear meanwhile)


def downgrade() -> None:
    pass
