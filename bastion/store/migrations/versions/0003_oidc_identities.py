"""OIDC identities on users; key binding bookkeeping

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users') as b:
        b.add_column(sa.Column('issuer', sa.String(length=512), nullable=True))
        b.add_column(sa.Column('subject', sa.String(length=255), nullable=True))
        b.add_column(sa.Column('email', sa.String(length=320), nullable=True))
        b.add_column(sa.Column('groups', sa.JSON(), nullable=True))
        b.create_unique_constraint('uq_users_issuer_subject', ['issuer', 'subject'])
    with op.batch_alter_table('key_bindings') as b:
        b.add_column(sa.Column('revoked_by', sa.String(length=255), nullable=True))
        b.add_column(sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True))
        b.add_column(sa.Column('client_addr', sa.String(length=64), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('key_bindings') as b:
        b.drop_column('client_addr')
        b.drop_column('last_used_at')
        b.drop_column('revoked_by')
    with op.batch_alter_table('users') as b:
        b.drop_constraint('uq_users_issuer_subject', type_='unique')
        b.drop_column('groups')
        b.drop_column('email')
        b.drop_column('subject')
        b.drop_column('issuer')
