"""auditors' reviews, verdicts and bookmarks of sessions (issue 23, item 2)

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'session_reviews',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('session_id', sa.String(length=40), nullable=False),
        sa.Column('reviewer', sa.String(length=255), nullable=False),
        sa.Column('verdict', sa.String(length=16), nullable=False),
        sa.Column('comment', sa.Text(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_session_reviews_session_id', 'session_reviews', ['session_id'])
    op.create_table(
        'bookmarks',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('session_id', sa.String(length=40), nullable=False),
        sa.Column('author', sa.String(length=255), nullable=False),
        sa.Column('t', sa.Float(), nullable=False),
        sa.Column('note', sa.Text(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_bookmarks_session_id', 'bookmarks', ['session_id'])


def downgrade() -> None:
    op.drop_index('ix_bookmarks_session_id', 'bookmarks')
    op.drop_table('bookmarks')
    op.drop_index('ix_session_reviews_session_id', 'session_reviews')
    op.drop_table('session_reviews')
