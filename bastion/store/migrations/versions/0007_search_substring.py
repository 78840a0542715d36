"""substring search of recordings: a normalised copy of each indexed line under a trigram index

SQLite: ``recording_text`` becomes an FTS5 table over ``norm`` with the ``trigram`` tokenizer (SQLite >= 3.34;
older: a plain table that every search reads, logged as a warning). PostgreSQL: ``norm`` under a ``pg_trgm`` GIN
index (the extension is created if it can be; without it, the same searches read the table, logged). Existing rows
are carried over with their ``norm`` computed here; ``bastion audit reindex`` adds what older versions did not
index (the standard input of sessions without a terminal).

Revision ID: 0007
Revises: 0006
"""
import logging

import sqlalchemy as sa
from alembic import op

from bastion.store.textquery import normalise

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

log = logging.getLogger("bastion.store.migrations")
BATCH = 5000


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        _sqlite_upgrade(conn)
    else:
        _postgres_upgrade(conn)


def _sqlite_upgrade(conn: sa.Connection) -> None:
    version = tuple(int(x) for x in conn.scalar(sa.text("SELECT sqlite_version()")).split(".")[:2])
    if version >= (3, 34):
        op.execute("CREATE VIRTUAL TABLE recording_text_new USING fts5(norm, text UNINDEXED, session_id UNINDEXED, "
                   "t UNINDEXED, kind UNINDEXED, tokenize='trigram case_sensitive 1')")
    else:
        log.warning("SQLite %s has no trigram tokenizer (3.34 or newer has): audit search reads every line",
                    ".".join(map(str, version)))
        op.execute("CREATE TABLE recording_text_new (id INTEGER PRIMARY KEY, session_id VARCHAR(40) NOT NULL, "
                   "t FLOAT NOT NULL, kind VARCHAR(16) NOT NULL, text TEXT NOT NULL, norm TEXT NOT NULL)")
        op.execute("CREATE INDEX ix_recording_text_session ON recording_text_new (session_id)")
    conn.connection.driver_connection.create_function(  # type: ignore[union-attr]
        "bastion_normalise", 1, normalise, deterministic=True)
    op.execute("INSERT INTO recording_text_new (session_id, t, kind, text, norm) "
               "SELECT session_id, t, kind, text, bastion_normalise(text) FROM recording_text")
    op.execute("DROP TABLE recording_text")
    op.execute("ALTER TABLE recording_text_new RENAME TO recording_text")


def _postgres_upgrade(conn: sa.Connection) -> None:
    try:
        with conn.begin_nested():
            conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
        trgm = True
    except sa.exc.DBAPIError as e:
        log.warning("no pg_trgm extension (%s): audit search reads every line; a superuser can run "
                    "CREATE EXTENSION pg_trgm, then: CREATE INDEX ix_recording_text_norm ON recording_text "
                    "USING GIN (norm gin_trgm_ops)", str(e).splitlines()[0])
        trgm = False
    op.execute("ALTER TABLE recording_text ADD COLUMN norm TEXT")
    last = 0
    while True:
        rows = conn.execute(sa.text("SELECT id, text FROM recording_text WHERE id > :last ORDER BY id LIMIT :n"),
                            {"last": last, "n": BATCH}).all()
        if not rows:
            break
        conn.execute(sa.text("UPDATE recording_text SET norm = :norm WHERE id = :id"),
                     [{"id": i, "norm": normalise(t)} for i, t in rows])
        last = rows[-1][0]
    op.execute("ALTER TABLE recording_text ALTER COLUMN norm SET NOT NULL")
    op.execute("DROP INDEX IF EXISTS ix_recording_text_tsv")
    op.execute("ALTER TABLE recording_text DROP COLUMN tsv")
    if trgm:
        op.execute("CREATE INDEX ix_recording_text_norm ON recording_text USING GIN (norm gin_trgm_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("CREATE VIRTUAL TABLE recording_text_old USING fts5("
                   "text, session_id UNINDEXED, t UNINDEXED, kind UNINDEXED, tokenize='unicode61')")
        op.execute("INSERT INTO recording_text_old (session_id, t, kind, text) "
                   "SELECT session_id, t, kind, text FROM recording_text WHERE kind != 'stdin'")
        op.execute("DROP TABLE recording_text")
        op.execute("ALTER TABLE recording_text_old RENAME TO recording_text")
        return
    op.execute("DELETE FROM recording_text WHERE kind = 'stdin'")
    op.execute("DROP INDEX IF EXISTS ix_recording_text_norm")
    op.execute("ALTER TABLE recording_text DROP COLUMN norm")
    op.execute("ALTER TABLE recording_text ADD COLUMN tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', "
               "regexp_replace(text, '[^[:alnum:]]+', ' ', 'g'))) STORED")
    op.execute("CREATE INDEX ix_recording_text_tsv ON recording_text USING GIN (tsv)")
