"""policies.history: which bash history expansions a typed line holds, checked against a real interactive bash."""

from __future__ import annotations

import shutil
import subprocess
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.history import history_expansions

# (line, designators) -- what bash would expand. Every line here is safe to run (``:`` and ``echo`` only).
HITS: list[tuple[str, list[str]]] = [
    (": !!", ["!!"]),
    (": !5", ["!5"]),
    (": !-1", ["!-1"]),
    (": !prev", ["!prev"]),
    (": !?one?", ["!?one?"]),
    (": !?one", ["!?one"]),
    (": a !# b", ["!#"]),
    (": !$", ["!$"]),
    (": !^", ["!^"]),
    (": !*", ["!*"]),
    (": !:0", ["!:0"]),
    (": !:1-2", ["!:1-2"]),
    (": !prev:s/one/ONE/", ["!prev:s/one/ONE/"]),
    (": !!:gs/o/0/", ["!!:gs/o/0/"]),
    (": !-1:p", ["!-1:p"]),
    (": !prev:h:t", ["!prev:h:t"]),
    ("^one^ONE", ["^one^ONE"]),
    ("^one^ONE^", ["^one^ONE^"]),
    ('echo "!!"', ["!!"]),  # double quotes do not stop it
    ('echo "a!b"', ["!b"]),
    ('echo "it\'s !!"', ["!!"]),  # a single quote inside double quotes is a plain character
    (": '!!' \"!!\"", ["!!"]),
    (": \\\\!!x", ["!x"]),  # an escaped backslash does not escape the !
    ("$!x", ["!x"]),  # bash's $! exception wants the $ after position 0
    (": ${!HOME", ["!HOME"]),  # no closing brace: not an indirect expansion
    (": [!a", ["!a"]),  # no closing bracket: not a glob
    (": a#!!", ["!!"]),  # '#' inside a word is no comment
    (': "# !!"', ["!!"]),
    (": x!y", ["!y"]),
    (": !!!!", ["!!", "!!"]),
    (": !(x)", ["!"]),  # bash 5.2 without extglob: an event search
    (": a!;", ["!"]),
    (': !"a"', ['!"a"']),
    ("echo X\n!!", ["!!"]),  # every physical line is expanded
    ("echo X\n^X^Y", ["^X^Y"]),
    ("echo 'a\n!!'", ["!!"]),  # an older bash reads the second line on its own
]

# (line, why it is not expanded)
HARMLESS: list[tuple[str, str]] = [
    ("echo hi", "no designator"),
    ("ls -la /tmp", "no designator"),
    ("[ ! -f x ]", "! before a space"),
    ("! true", "! before a space"),
    ("[[ a != b ]]", "! before ="),
    (": a!=b", "! before ="),
    ("echo hi!", "! at the end"),
    ("echo hi! there", "! before a space"),
    ("echo 'a!b'", "single quotes"),
    (": '!!'", "single quotes"),
    ("echo $!", "$! is a parameter"),
    (": $!!", "$! then ! at the end"),
    ("echo ${!x}", "indirect expansion"),
    ("echo ${!prefix*}", "indirect expansion"),
    (": [!a]", "glob bracket"),
    ("ls [!ab]*.txt", "glob bracket"),
    (": \\!!", "escaped !"),
    (': "\\!!"', "escaped ! in double quotes"),
    (': "a!"', '! before the closing double quote'),
    (': "!"', '! before the closing double quote'),
    (": # !!", "comment"),
    ("ls # wow!!", "comment"),
    (" ^one^ONE", "^ not at the start of the line"),
    ("grep ^root /etc/passwd", "^ not at the start of the line"),
    ("echo a^b^c", "^ not at the start of the line"),
    ("awk '$1 != \"x\"' f", "single quotes"),
    ("echo $'a!b'", "ANSI-C quotes"),
    ("if ! grep -q x f; then echo no; fi", "! before a space"),
    ("echo !\techo", "! before a tab"),
    ("", "empty"),
]


def test_hits() -> None:
    for line, want in HITS:
        assert history_expansions(line) == want, line


def test_harmless_lines() -> None:
    for line, why in HARMLESS:
        assert history_expansions(line) == [], (line, why)


def test_enough_cases_both_ways() -> None:
    assert len(HITS) >= 30 and len(HARMLESS) >= 30


# -- the real thing -------------------------------------------------------------------------------------------------
BASH = shutil.which("bash")
PREV = ": prev one two"
_HIST_ERRORS = ("event not found", "bad word specifier", "substitution failed", "no previous substitution",
                "unrecognized history modifier")


def bash_expands(line: str) -> bool:
    """Does an interactive bash (history expansion on, its defaults) rewrite or refuse ``line``? Its history holds
    ``PREV`` only; an expansion either changes the line it records or fails with a history error. No PATH: builtins
    only."""
    assert BASH is not None
    script = f"history -c\nhistory -s '{PREV}'\n{line}\nhistory\n"
    env = {"PATH": "/nonexistent", "HOME": "/nonexistent", "PS1": "", "PS2": "", "HISTFILE": "/dev/null",
           "TERM": "dumb", "LC_ALL": "C"}
    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run([BASH, "--norc", "--noprofile", "--noediting", "-i"], input=script.encode(),
                             capture_output=True, env=env, cwd=d, timeout=20)
    err = out.stderr.decode(errors="replace")
    if any(e in err for e in _HIST_ERRORS):
        return True
    entries = [ln[7:] for ln in out.stdout.decode(errors="replace").splitlines()
               if ln[:5].strip().isdigit() and ln[5:7] == "  "]
    if entries and entries[0] == PREV:
        return not (len(entries) >= 2 and entries[1] == line)
    # an unclosed quote swallowed `history`: bash printed the expanded line if there was an expansion
    rest = [ln.lstrip("> ").strip() for ln in err.splitlines()]
    noise = ("terminal process group", "no job control", "unexpected EOF", "syntax error", "unexpected end of file",
             "unexpected token")
    return any(ln and ln != "exit" and not any(k in ln for k in noise) for ln in rest)


needs_bash = pytest.mark.skipif(BASH is None, reason="bash is not installed")

# fail closed on purpose: newer bash does not expand these, older bash (or bash with extglob off/on) may
OVER_STRICT = {": $'a\\'!!'", ': "$(echo \'!!\')"'}


@needs_bash
def test_the_tables_agree_with_bash() -> None:
    for line, _ in HITS:
        if "\n" not in line:  # bash reads a multi-line text line by line; the harness checks one line
            assert bash_expands(line), f"bash does not expand {line!r}"
    for line, why in HARMLESS:
        if line:
            assert not bash_expands(line), f"bash expands {line!r} ({why})"
    for line in OVER_STRICT:
        assert history_expansions(line) and not bash_expands(line)


_ATOMS = ["a", "b", "1", " ", "!", "!", "!", "-", ":", "=", "?", "*", "%", "^", "$", "#", "[", "]", "s", "/", "x",
          "\\!", "\\\\", "'a!b'", '"a!b"', '"', "'", "$'x\\'y'", "${!a}", "{", "}", '\\"', "!(", "\t", "!!", "!$"]


@needs_bash
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_ATOMS), min_size=1, max_size=9).map("".join))
def test_whatever_bash_expands_is_found(tail: str) -> None:
    """Differential: a line bash rewrites (or refuses with a history error) always has a hit. The converse is not
    required: the scanner is allowed to be stricter than this bash."""
    line = ": " + tail
    if bash_expands(line):
        assert history_expansions(line), line


# -- properties ------------------------------------------------------------------------------------------------------
_PLAIN = st.text(st.sampled_from("abcxyz019 -_./=:*?$[]{}\"'\\#\t"), max_size=30)
_DESIGNATORS = st.sampled_from(["!!", "!5", "!-2", "!ls", "!?rm?", "!#", "!$", "!^", "!*", "!:0", "!:1-3",
                                "!chmod:s/600/777/", "!!:gs/a/b/", "!-1:p", "!ech:h"])
_UNQUOTED = st.text(st.sampled_from("abcxyz019-_./:"), max_size=20)


@settings(max_examples=300, deadline=None)
@given(_PLAIN)
def test_no_bang_no_caret_no_hit(text: str) -> None:
    assert history_expansions(text) == []


@settings(max_examples=300, deadline=None)
@given(st.lists(_UNQUOTED, max_size=4), st.integers(0, 4), _DESIGNATORS, st.sampled_from(["", " ", ";", "|", "\n"]))
def test_an_unquoted_designator_is_found(words: list[str], at: int, designator: str, sep: str) -> None:
    """Words joined by spaces, a designator put in as a word of its own: always found."""
    at = min(at, len(words))
    line = " ".join(words[:at] + [designator] + words[at:]) + sep
    assert history_expansions(line), line


@settings(max_examples=200, deadline=None)
@given(_PLAIN, _DESIGNATORS)
def test_a_designator_in_double_quotes_is_found(before: str, designator: str) -> None:
    """In double quotes ``!`` still expands (the prefix cannot leave an open quote: its quotes are dropped)."""
    prefix = before.replace("'", "").replace('"', "").replace("\\", "").replace("#", "")
    line = f'echo {prefix} "{designator} x"'
    assert history_expansions(line), line
