"""`bastion audit search` is a case- and whitespace-insensitive substring search (issue 23, item 5): the query
building and normalisation, SQLite's trigram index (and the scan without it), the standard input of sessions
without a terminal, the migration of rows indexed before, and a property: any substring of an indexed line finds it,
and a query means its characters, never FTS5 or LIKE syntax."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, text

from bastion.store.db import MIGRATIONS, Store
from bastion.store.search import index_recording, search, trigram_index
from bastion.store.textquery import fts_phrase, like_pattern, normalise, plan
from recorder.asciicast import CastWriter

SID = "20261130-000001-aaaaaaaaaaaa"
_serial = itertools.count()


def test_normalise_folds_case_and_whitespace_runs() -> None:
    assert normalise("  Removed\t 'VICTIM2'  \n") == "removed 'victim2'"
    assert normalise("STRASSE Straße") == "strasse strasse"  # full case folding, not lower()
    assert normalise(" \t\n ") == ""


def test_fts_phrase_and_like_pattern_quote_everything() -> None:
    assert fts_phrase('say "hi" NEAR(a b) x*') == '"say ""hi"" NEAR(a b) x*"'
    assert like_pattern("100%_off!") == "%100!%!_off!!%"


def test_plan_per_store_and_length() -> None:
    p = plan("  Emoved ", "sqlite")
    assert (p.needle, p.where, p.params, p.indexed) == ("emoved", "rt.norm MATCH :q", {"q": '"emoved"'}, True)
    p = plan("rm", "sqlite")  # shorter than a trigram: a scan
    assert (p.where, p.params, p.indexed) == ("instr(rt.norm, :needle) > 0", {"needle": "rm"}, False)
    p = plan("emoved", "sqlite", trigram=False)
    assert (p.where, p.indexed) == ("instr(rt.norm, :needle) > 0", False)
    p = plan("A_B  %", "postgresql")
    assert (p.where, p.params, p.indexed) == ("rt.norm LIKE :pat ESCAPE '!'", {"pat": "%a!_b !%%"}, True)
    assert not plan("ab", "postgresql").indexed
    for bad in ("", "  \t", "a\x00b"):
        with pytest.raises(ValueError):
            plan(bad, "sqlite")


def make_store(path: Path) -> Store:
    store = Store(f"sqlite:///{path}")
    store.migrate()
    return store


def record(store: Store, d: Path, sid: str, screen: list[str], *, stdin: str = "", term: str = "dumb") -> Path:
    """A closed, indexed recording of session ``sid``: ``screen`` lines of output, ``stdin`` as recorded input."""
    path = d / f"{sid}-{next(_serial)}.cast"
    w = CastWriter(path, 80, 24, title="t", env={"TERM": term})
    for line in screen:
        w.output(line.encode() + b"\r\n")
    if stdin:
        w.input(stdin.encode())
    sha = w.close()
    if store.session(sid) is None:
        store.start_session(sid, user="alice", resource="web", kind="ssh", mode="exec", command=None,
                            client_addr="", node="n1", recording_path=path)
        store.end_session(sid, outcome="exited", exit_status=0, message="", sha256=sha, size=path.stat().st_size)
    index_recording(store, sid, path)
    return path


def texts(store: Store, query: str, **kw: str) -> list[tuple[str, str]]:
    return [(h.kind, h.text) for h in search(store, query, **kw)]


def test_mid_word_substrings_on_sqlite(tmp_path: Path) -> None:
    store = make_store(tmp_path / "b.db")
    assert trigram_index(store)  # this Python's SQLite has the trigram tokenizer: the index is used
    record(store, tmp_path, SID, ["$ rm -v victim2", "removed 'victim2'", "\x1b[1mBold\x1b[0m    words here"])
    assert texts(store, "emoved") == [("screen", "removed 'victim2'")]
    assert texts(store, "ICTIM2") == [("screen", "$ rm -v victim2"), ("screen", "removed 'victim2'")]
    assert texts(store, "d w") == [("screen", "Bold    words here")]  # a whitespace run matches any run
    assert texts(store, "m -") == [("screen", "$ rm -v victim2")]  # a short query: scanned
    assert texts(store, "ictim3") == [] and texts(store, "emovedd") == [] and texts(store, "zz") == []
    for literal in ('"', "*", "-v", "NEAR", "victim2 AND", "'victim2'", ":", "%", "_"):
        expected = [line for line in ("$ rm -v victim2", "removed 'victim2'", "Bold    words here")
                    if normalise(literal) in normalise(line)]
        assert [t for _, t in texts(store, literal)] == expected, literal


def test_stdin_of_a_session_without_a_terminal_is_searchable(tmp_path: Path) -> None:
    store = make_store(tmp_path / "b.db")
    program = "import os\nprint('fed-on-stdin', os.getpid())\n"
    record(store, tmp_path, SID, ["fed-on-stdin 4242"], stdin=program)
    assert texts(store, "os.getpid") == [("stdin", "print('fed-on-stdin', os.getpid())")]
    assert texts(store, "ed-on-std", kind="stdin") == [("stdin", "print('fed-on-stdin', os.getpid())")]
    assert texts(store, "ed-on-std", kind="screen") == [("screen", "fed-on-stdin 4242")]
    # with a terminal, recorded input is the echo of what was typed: on screen already, not indexed twice
    other = "20261130-000002-bbbbbbbbbbbb"
    record(store, tmp_path, other, ["$ ls"], stdin="ls-typed-at-a-terminal\r", term="xterm-256color")
    assert texts(store, "typed-at-a") == []


def test_without_the_trigram_tokenizer_the_table_is_scanned(tmp_path: Path) -> None:
    """SQLite older than 3.34 (faked: sqlite_version() answers 3.31.1): migration 0007 makes a plain table, and
    searches read it, with the same answers."""
    store = Store(f"sqlite:///{tmp_path / 'old.db'}")
    event.listen(store.engine, "connect",
                 lambda dbapi, _: dbapi.create_function("sqlite_version", 0, lambda: "3.31.1"))
    store.migrate()
    assert not trigram_index(store)
    record(store, tmp_path, SID, ["removed 'victim2'"])
    assert texts(store, "EMOVED 'v") == [("screen", "removed 'victim2'")] and texts(store, "victim3") == []


def test_rows_indexed_before_migration_0007_are_carried_over(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    store = Store(url)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0006")
        conn.execute(text("INSERT INTO sessions (id, user, resource, kind, mode, client_addr, node, started_at, "
                          "outcome, message) VALUES (:sid, 'alice', 'web', 'ssh', 'exec', '', 'n', "
                          "'2026-11-01 10:00:00', 'exited', '')"), {"sid": SID})
        conn.execute(text("INSERT INTO recording_text (text, session_id, t, kind) VALUES "
                          "('Removed  VICTIM2', :sid, 1.5, 'screen')"), {"sid": SID})
    store.migrate()
    assert texts(store, "moved victim") == [("screen", "Removed  VICTIM2")]
    assert search(store, "ictim2")[0].t == 1.5


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, Path]]:
    d = tmp_path_factory.mktemp("search")
    store = make_store(d / "b.db")
    yield store, d
    store.engine.dispose()


# quotes, FTS5 syntax (" * - : ^ ( ) + NEAR AND OR NOT), LIKE wildcards and escapes, case pairs, whitespace
ALPHABET = st.sampled_from(list('ab AB"*-:^()+{},.%_!\\\'/\tßSsΣσςİé') + ["NEAR", "AND", "OR", "NOT", "  "])
LINE = st.lists(ALPHABET, min_size=1, max_size=24).map("".join).filter(lambda s: s.strip() != "")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINE, min_size=1, max_size=4), data=st.data())
def test_any_substring_finds_its_line_and_queries_are_literal(shared_store: tuple[Store, Path],
                                                             lines: list[str], data: st.DataObject) -> None:
    store, d = shared_store
    record(store, d, SID, lines)
    with store.engine.connect() as c:
        indexed = [r[0] for r in c.execute(text("SELECT text FROM recording_text WHERE session_id = :s"),
                                           {"s": SID})]
    assert indexed, lines
    # any substring of an indexed line (as normalised) finds that line
    norm = normalise(data.draw(st.sampled_from(indexed)))
    start = data.draw(st.integers(0, len(norm) - 1))
    piece = norm[start:data.draw(st.integers(start + 1, len(norm)))]
    if piece.strip():
        assert normalise(piece) in norm
        assert norm in [normalise(h.text) for h in search(store, piece)]
    # and any query finds exactly the lines that contain it, whatever syntax it looks like
    query = data.draw(LINE)
    expected = sorted(t for t in indexed if normalise(query) in normalise(t))
    assert sorted(h.text for h in search(store, query)) == expected
