"""when each character of an indexed line appeared: a search hit points at the moment its own text became visible
(issue 24)

``recording_text`` gets ``times`` (runs of per-character times over ``norm``, NULL when the whole line appeared at
once). SQLite's FTS5 table cannot add a column: it is made again with it and the rows carried over (the plain table
of an SQLite without the trigram tokenizer, and PostgreSQL's, just add it). Rows indexed before have no times, so
their hits keep pointing at the row's first write; every kept recording is marked unindexed, so the daemon's audit
worker indexes them again (niced, one at a time) when it next starts, as ``bastion audit reindex`` would.

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def _is_fts5(conn: sa.Connection) -> bool:
    sql = conn.scalar(sa.text("SELECT sql FROM sqlite_master WHERE name = 'recording_text'"))
    return "fts5" in str(sql or "").lower()


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite" and _is_fts5(conn):
        op.execute("CREATE VIRTUAL TABLE recording_text_new USING fts5(norm, text UNINDEXED, session_id UNINDEXED, "
                   "t UNINDEXED, kind UNINDEXED, times UNINDEXED, tokenize='trigram case_sensitive 1')")
        op.execute("INSERT INTO recording_text_new (session_id, t, kind, text, norm) "
                   "SELECT session_id, t, kind, text, norm FROM recording_text")
        op.execute("DROP TABLE recording_text")
        op.execute("ALTER TABLE recording_text_new RENAME TO recording_text")
    else:
        op.execute("ALTER TABLE recording_text ADD COLUMN times TEXT")
    op.execute("UPDATE recordings SET indexed_at = NULL WHERE pruned_at IS NULL AND indexed_at IS NOT NULL")


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite" and _is_fts5(conn):
        op.execute("CREATE VIRTUAL TABLE recording_text_old USING fts5(norm, text UNINDEXED, session_id UNINDEXED, "
                   "t UNINDEXED, kind UNINDEXED, tokenize='trigram case_sensitive 1')")
        op.execute("INSERT INTO recording_text_old (session_id, t, kind, text, norm) "
                   "SELECT session_id, t, kind, text, norm FROM recording_text")
        op.execute("DROP TABLE recording_text")
        op.execute("ALTER TABLE recording_text_old RENAME TO recording_text")
    elif conn.dialect.name != "sqlite":  # an SQLite that old may not drop a column; older code never names it
        op.execute("ALTER TABLE recording_text DROP COLUMN times")
