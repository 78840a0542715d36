"""hash chains with positions and heads, chain signatures, the recordings' full-text index

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

from bastion.store.chain import AUDIT, GENESIS, RECORDINGS, audit_link, recording_link

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('recordings') as b:
        b.add_column(sa.Column('seq', sa.Integer(), nullable=True))
        b.add_column(sa.Column('pruned_at', sa.DateTime(timezone=True), nullable=True))
        b.add_column(sa.Column('indexed_at', sa.DateTime(timezone=True), nullable=True))
        b.create_unique_constraint('uq_recordings_seq', ['seq'])
    with op.batch_alter_table('audit_events') as b:
        b.add_column(sa.Column('seq', sa.Integer(), nullable=True))
        b.add_column(sa.Column('prev_hash', sa.String(length=64), nullable=True))
        b.add_column(sa.Column('hash', sa.String(length=64), nullable=True))
        b.create_unique_constraint('uq_audit_events_seq', ['seq'])
    heads = op.create_table(
        'chain_heads',
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('head', sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint('name'))
    op.create_table(
        'chain_signatures',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('chain', sa.String(length=32), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('head', sa.String(length=64), nullable=False),
        sa.Column('key_id', sa.String(length=64), nullable=False),
        sa.Column('signature', sa.String(length=128), nullable=False),
        sa.Column('signed_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_chain_signatures_chain', 'chain_signatures', ['chain'])

    # existing rows join the chains in the order they were written
    conn = op.get_bind()
    seq, head = 0, GENESIS
    for rid, sid, sha in conn.execute(sa.text(
            "SELECT id, session_id, sha256 FROM recordings WHERE sha256 IS NOT NULL ORDER BY closed_at, id")).all():
        seq += 1
        link = recording_link(head, sid, sha)
        conn.execute(sa.text("UPDATE recordings SET seq=:s, prev_chain=:p, chain=:c WHERE id=:i"),
                     {"s": seq, "p": head, "c": link, "i": rid})
        head = link
    conn.execute(heads.insert().values(name=RECORDINGS, seq=seq, head=head))
    events = sa.table('audit_events', sa.column('id'), sa.column('ts', sa.DateTime(timezone=True)),
                      sa.column('actor'), sa.column('action'), sa.column('outcome'), sa.column('resource'),
                      sa.column('session_id'), sa.column('client_addr'), sa.column('detail', sa.JSON()))
    seq, head = 0, GENESIS
    for row in conn.execute(sa.select(events).order_by(events.c.id)).mappings().all():
        seq += 1
        link = audit_link(head, seq, ts=row["ts"], actor=row["actor"], action=row["action"],
                          outcome=row["outcome"], resource=row["resource"], session_id=row["session_id"],
                          client_addr=row["client_addr"], detail=row["detail"])
        conn.execute(sa.text("UPDATE audit_events SET seq=:s, prev_hash=:p, hash=:h WHERE id=:i"),
                     {"s": seq, "p": head, "h": link, "i": row["id"]})
        head = link
    conn.execute(heads.insert().values(name=AUDIT, seq=seq, head=head))

    # the full-text index of what recordings show (screen lines) and what was judged in them (markers)
    if conn.dialect.name == "sqlite":
        op.execute("CREATE VIRTUAL TABLE recording_text USING fts5("
                   "text, session_id UNINDEXED, t UNINDEXED, kind UNINDEXED, tokenize='unicode61')")
    else:
        op.execute("CREATE TABLE recording_text (id BIGSERIAL PRIMARY KEY, session_id VARCHAR(40) NOT NULL, "
                   "t DOUBLE PRECISION NOT NULL, kind VARCHAR(16) NOT NULL, text TEXT NOT NULL, "
                   "tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', "
                   "regexp_replace(text, '[^[:alnum:]]+', ' ', 'g'))) STORED)")  # words, as SQLite's unicode61
        op.execute("CREATE INDEX ix_recording_text_tsv ON recording_text USING GIN (tsv)")
        op.execute("CREATE INDEX ix_recording_text_session ON recording_text (session_id)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS recording_text")
    op.drop_index('ix_chain_signatures_chain', table_name='chain_signatures')
    op.drop_table('chain_signatures')
    op.drop_table('chain_heads')
    with op.batch_alter_table('audit_events') as b:
        b.drop_constraint('uq_audit_events_seq', type_='unique')
        b.drop_column('hash')
        b.drop_column('prev_hash')
        b.drop_column('seq')
    with op.batch_alter_table('recordings') as b:
        b.drop_constraint('uq_recordings_seq', type_='unique')
        b.drop_column('indexed_at')
        b.drop_column('pruned_at')
        b.drop_column('seq')
