"""Parse a shell command line the way a POSIX shell would, far enough to know which programs it runs.

This is a classifier, not a shell: it does quote removal and splits pipelines, lists, subshells and compound
commands into simple commands, strips wrappers (``sudo``, ``env``, ``command``, ``nohup``, ``xargs`` ...) and
path prefixes to find the effective program, and reports every construct it cannot see through (command
substitution, ``eval``, variables/quotes/globs in command position, ``sh -c``, pipes into interpreters, here-docs,
function and alias definitions). Callers treat those as *opaque* and fail closed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

OPERATORS = ("&&", "||", ";;", "|&", ">>", "<<<", "<<", "<>", ">|", "&>>", "&>", "<&", ">&", "|", "&", ";",
             "(", ")", "<", ">", "\n")
SEPARATORS = {"&&", "||", "|", "|&", "&", ";", "\n", "(", ")", ";;"}
REDIRECTS = {">>", "<<<", "<<", "<>", ">|", "&>>", "&>", "<&", ">&", "<", ">"}
RESERVED_PREFIX = {"if", "then", "else", "elif", "do", "while", "until", "!", "{", "time"}
RESERVED_END = {"fi", "done", "}", "esac"}
SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "mksh", "fish", "csh", "tcsh", "ash", "busybox", "rbash"}
INTERPRETERS = SHELLS | {"python", "python2", "python3", "perl", "ruby", "node", "nodejs", "php", "lua", "tclsh",
                         "expect", "awk", "gawk", "mawk", "nawk", "osascript", "pwsh", "R", "Rscript", "jshell",
                         "irb", "ipython", "psql", "mysql", "sqlite3", "bc", "gdb"}
OPAQUE_PROGRAMS = {"eval": "eval", "source": "source runs a file", ".": "source runs a file",
                   "alias": "alias definition", "function": "function definition", "trap": "trap runs code later",
                   "case": "case statement", "coproc": "coproc", "select": "select loop", "fc": "fc re-runs history",
                   "watch": "watch runs a string", "su": "su runs a shell", "script": "script runs a shell",
                   "builtin": "builtin"}

# wrapper -> (options that take an argument, number of leading positional args to skip before the command)
WRAPPERS: dict[str, tuple[frozenset[str], int]] = {
    "sudo": (frozenset({"-u", "-g", "-h", "-p", "-C", "-D", "-r", "-t", "-T", "-U", "--user", "--group",
                        "--host", "--prompt", "--close-from", "--chdir", "--role", "--type", "--other-user"}), 0),
    "doas": (frozenset({"-u", "-C"}), 0),
    "env": (frozenset({"-u", "--unset", "-C", "--chdir"}), 0),
    "command": (frozenset(), 0),
    "exec": (frozenset({"-a"}), 0),
    "nohup": (frozenset(), 0),
    "time": (frozenset({"-f", "--format", "-o", "--output"}), 0),
    "nice": (frozenset({"-n", "--adjustment"}), 0),
    "ionice": (frozenset({"-c", "--class", "-n", "--classdata", "-p", "--pid", "-P", "--pgid", "-u", "--uid"}), 0),
    "stdbuf": (frozenset({"-i", "-o", "-e", "--input", "--output", "--error"}), 0),
    "timeout": (frozenset({"-s", "--signal", "-k", "--kill-after"}), 1),
    "setsid": (frozenset(), 0),
    "chroot": (frozenset({"--userspec", "--groups"}), 1),
    "xargs": (frozenset({"-a", "--arg-file", "-d", "--delimiter", "-E", "-e", "-I", "-i", "-L", "-l", "-n",
                         "--max-args", "-P", "--max-procs", "-s", "--max-chars"}), 0),
    "flock": (frozenset({"-w", "--timeout", "-E", "--conflict-exit-code"}), 1),
    "taskset": (frozenset(), 1),
    "chrt": (frozenset(), 1),
    "strace": (frozenset({"-e", "-o", "-p", "-s", "-u", "-E"}), 0),
    "ltrace": (frozenset({"-e", "-o", "-p", "-s", "-u"}), 0),
    "unbuffer": (frozenset(), 0),
    "runuser": (frozenset({"-u", "--user", "-g", "--group", "-G"}), 0),
    "busybox": (frozenset(), 0),
    "then": (frozenset(), 0),
}
# options after which a wrapper runs no command at all (``command -v rm`` only prints a path)
NON_EXECUTING = {"command": {"-v", "-V"}, "sudo": {"-l", "-v", "-k", "-K", "-V", "-e", "--edit"},
                 "env": {"--help", "--version"}}
SHELL_C = {"-c", "--command", "-e", "-E", "-r", "--eval", "--exec", "-m"}


class ShellParseError(ValueError):
    """The text is not a complete, well-formed command line (unbalanced quotes, dangling operator...)."""


@dataclass(frozen=True)
class Word:
    """A word after quote removal, and what the raw word contained."""

    text: str
    raw: str
    quoted: bool = False       # contained quotes or backslashes
    expansion: bool = False    # contained $var / ${...} / $((...))
    substitution: bool = False  # contained $(...) / `...` / <(...) / >(...)
    glob: bool = False         # contained unquoted * ? [


@dataclass(frozen=True)
class SimpleCommand:
    """One simple command: its effective program (basename, wrappers stripped) and arguments."""

    program: str
    args: tuple[str, ...]
    argv: tuple[str, ...]
    wrappers: tuple[str, ...] = ()
    opaque: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return " ".join(self.argv)


@dataclass
class ParsedLine:
    """Every simple command a line would run, and every construct the parser could not see through."""

    commands: list[SimpleCommand] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)


def _read_until_close(s: str, i: int, open_: str, close: str) -> int:
    """Index just past the ``close`` that balances an already-consumed ``open_`` at s[i-1]."""
    depth, n = 1, len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "'" and open_ != "`":
            j = s.find("'", i + 1)
            if j < 0:
                raise ShellParseError("unterminated single quote")
            i = j + 1
            continue
        if c == '"' and open_ != "`":
            i = _read_double(s, i + 1)[1]
            continue
        if s.startswith(close, i):
            depth -= 1
            if depth == 0:
                return i + len(close)
        elif s.startswith(open_, i) and open_ != close:
            depth += 1
        i += 1
    raise ShellParseError(f"unterminated {open_}")


def _dollar_group(s: str, i: int) -> tuple[int, bool, bool] | None:
    """For ``$((...))``, ``$(...)`` or ``${...}`` at ``s[i]``: (end, is an expansion, runs a command)."""
    if s.startswith("$((", i):
        j = _read_until_close(s, i + 3, "((", "))")
        return j, True, "$(" in s[i + 3:j] or "`" in s[i + 3:j]
    if s.startswith("$(", i):
        return _read_until_close(s, i + 2, "(", ")"), False, True
    if s.startswith("${", i):
        j = _read_until_close(s, i + 2, "{", "}")
        return j, True, "$(" in s[i:j] or "`" in s[i:j]
    return None


def _read_double(s: str, i: int) -> tuple[str, int, bool, bool]:
    """Read a double-quoted string starting after the quote; (text, end, expansion, substitution)."""
    out: list[str] = []
    exp = sub = False
    n = len(s)
    while i < n:
        c = s[i]
        if c == '"':
            return "".join(out), i + 1, exp, sub
        if c == "\\" and i + 1 < n:
            nxt = s[i + 1]
            if nxt in '$`"\\\n':
                if nxt != "\n":
                    out.append(nxt)
                i += 2
                continue
            out.append(c)
            i += 1
            continue
        if c == "`":
            j = _read_until_close(s, i + 1, "`", "`")
            out.append(s[i:j])
            sub = True
            i = j
            continue
        if c == "$" and i + 1 < n:
            grouped = _dollar_group(s, i)
            if grouped is not None:
                j, e, su = grouped
                exp, sub = exp or e, sub or su
            elif re.match(r"[A-Za-z_0-9@*#?$!-]", s[i + 1]):
                m = re.match(r"\$(?:[A-Za-z_][A-Za-z_0-9]*|[0-9@*#?$!-])", s[i:])
                j = i + len(m.group(0)) if m else i + 2
                exp = True
            else:
                out.append(c)
                i += 1
                continue
            out.append(s[i:j])
            i = j
            continue
        out.append(c)
        i += 1
    raise ShellParseError("unterminated double quote")


def tokenize(s: str) -> list[Word | str]:
    """Split into words (with quote removal) and operator strings; comments dropped."""
    tokens: list[Word | str] = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c in " \t":
            i += 1
            continue
        if c == "\\" and i + 1 < n and s[i + 1] == "\n":  # line continuation
            i += 2
            continue
        if c == "#":
            j = s.find("\n", i)
            i = n if j < 0 else j
            continue
        op = next((o for o in OPERATORS if s.startswith(o, i)), None)
        if op is not None and not (op in ("<", ">") and s.startswith("(", i + 1)):
            tokens.append(op)
            i += len(op)
            continue
        # a word
        out: list[str] = []
        start = i
        quoted = exp = sub = glob = False
        while i < n:
            c = s[i]
            if c in " \t\n;&|()" or (c in "<>" and not s.startswith("(", i + 1)):
                break
            if c == "\\":
                quoted = True
                if i + 1 < n and s[i + 1] == "\n":
                    i += 2
                    continue
                if i + 1 < n:
                    out.append(s[i + 1])
                i += 2
                continue
            if c == "'":
                j = s.find("'", i + 1)
                if j < 0:
                    raise ShellParseError("unterminated single quote")
                out.append(s[i + 1:j])
                quoted = True
                i = j + 1
                continue
            if s.startswith("$'", i):
                j = i + 2
                while j < n and s[j] != "'":
                    j += 2 if s[j] == "\\" else 1
                if j >= n:
                    raise ShellParseError("unterminated $'...'")
                out.append(s[i:j + 1])
                quoted = exp = True
                i = j + 1
                continue
            if c == '"':
                text, i, e, su = _read_double(s, i + 1)
                out.append(text)
                quoted, exp, sub = True, exp or e, sub or su
                continue
            if c == "`":
                j = _read_until_close(s, i + 1, "`", "`")
                out.append(s[i:j])
                sub = True
                i = j
                continue
            if c in "<>" and s.startswith("(", i + 1):
                j = _read_until_close(s, i + 2, "(", ")")
                out.append(s[i:j])
                sub = True
                i = j
                continue
            grouped = _dollar_group(s, i) if c == "$" else None
            if grouped is not None:
                j, e, su = grouped
                exp, sub = exp or e, sub or su
                out.append(s[i:j])
                i = j
                continue
            if c == "$" and i + 1 < n and re.match(r"[A-Za-z_0-9@*#?$!-]", s[i + 1]):
                exp = True
            if c in "*?[":
                glob = True
            if c == "{" and re.match(r"\{[^}\s]*(,|\.\.)[^}\s]*\}", s[i:]):
                glob = True  # brace expansion
            out.append(c)
            i += 1
        tokens.append(Word("".join(out), s[start:i], quoted, exp, sub, glob))
    return tokens


def _wrapper_skip(prog: str, words: list[Word]) -> tuple[int, bool]:
    """Index of the wrapped command in ``words`` (after the wrapper's options), and whether it runs one."""
    takes_arg, positional = WRAPPERS[prog]
    i = 1
    while i < len(words):
        w = words[i].text
        if w == "--":
            i += 1
            break
        if prog == "env" and re.match(r"^[A-Za-z_][A-Za-z_0-9]*=", w):
            i += 1
            continue
        if w.startswith("-") and w != "-":
            if w in NON_EXECUTING.get(prog, ()):
                return len(words), False
            if prog == "env" and (w in ("-S", "--split-string") or w.startswith("--split-string=")):
                return -1, True
            if w in takes_arg:
                i += 2
            elif "=" in w and w.split("=", 1)[0] in takes_arg:
                i += 1
            elif len(w) > 2 and not w.startswith("--") and w[:2] in takes_arg:
                i += 1  # -uroot
            else:
                i += 1
            continue
        break
    i += positional
    return i, True


def _simple(words: list[Word], line: ParsedLine, piped_in: bool) -> None:
    """Classify one simple command's words (already split on operators and redirections removed)."""
    opaque: list[str] = []
    # leading assignments
    while words and re.match(r"^[A-Za-z_][A-Za-z_0-9]*(\[[^]]*\])?\+?=", words[0].raw):
        if words[0].substitution:
            opaque.append("command substitution in an assignment")
        words = words[1:]
    wrappers: list[str] = []
    for w in words:
        if w.substitution:
            opaque.append("command substitution")
            break
    while words:
        head = words[0]
        if head.substitution:
            opaque.append("command substitution in command position")
            break
        if head.expansion:
            opaque.append("variable in command position")
            break
        if head.quoted:
            opaque.append("quotes or backslash in command position")
        if head.glob:
            opaque.append("glob in command position")
        name = os.path.basename(head.text) if "/" in head.text and not head.text.endswith("/") else head.text
        if name in RESERVED_PREFIX and not head.quoted:
            words = words[1:]
            continue
        if name in RESERVED_END and not head.quoted:
            words = words[1:]
            continue
        if name in WRAPPERS:
            idx, runs = _wrapper_skip(name, words)
            if idx < 0:
                opaque.append(f"{name} -S splits a string into a command")
                break
            if runs and idx < len(words):
                wrappers.append(name)
                words = words[idx:]
                continue
        break
    if not words:
        if wrappers:
            line.commands.append(SimpleCommand(wrappers[-1], (), (), tuple(wrappers[:-1]), tuple(opaque)))
        line.opaque += opaque
        return
    head = words[0]
    prog = os.path.basename(head.text) if "/" in head.text and not head.text.endswith("/") else head.text
    args = tuple(w.text for w in words[1:])
    if prog in OPAQUE_PROGRAMS:
        opaque.append(OPAQUE_PROGRAMS[prog])
    base = re.sub(r"[0-9.]+$", "", prog) if re.match(r"^(python|perl|ruby|php|lua|node)[0-9.]*$", prog) else prog
    if base in INTERPRETERS:
        if piped_in:
            opaque.append(f"pipe into interpreter {prog}")
        if any(a in SHELL_C or (base in SHELLS and re.fullmatch(r"-[a-zA-Z]*c[a-zA-Z]*", a)) for a in args):
            opaque.append(f"{prog} runs code given as a string")
        if base in SHELLS and prog != "busybox" and not args:
            opaque.append(f"{prog} starts a shell")
        if prog == "busybox" and args:
            line.commands.append(SimpleCommand(prog, args, tuple(w.text for w in words), tuple(wrappers),
                                               tuple(opaque)))
            _simple(words[1:], line, piped_in)
            return
    # find -exec / -execdir / -ok / -okdir runs a program too
    if prog == "find":
        for k, a in enumerate(args):
            if a in ("-exec", "-execdir", "-ok", "-okdir") and k + 1 < len(args):
                rest = [w for w in words[k + 2:] if w.text not in (";", "+", "{}")]
                end = next((m for m, w in enumerate(rest) if w.text in (";", "+")), len(rest))
                _simple(rest[:end], line, False)
    line.commands.append(SimpleCommand(prog, args, tuple(w.text for w in words), tuple(wrappers), tuple(opaque)))
    line.opaque += opaque


def parse_line(text: str) -> ParsedLine:
    """Parse ``text`` into the simple commands it would run; raises :class:`ShellParseError` on bad syntax."""
    if "\x00" in text:
        raise ShellParseError("NUL byte in command")
    tokens = tokenize(text)
    line = ParsedLine()
    words: list[Word] = []
    piped_in = False
    depth = 0
    expect_word = False
    i = 0
    prev_op: str | None = None
    while i < len(tokens):
        t = tokens[i]
        if isinstance(t, Word):
            if words == [] and t.text in ("for", "select") and not t.quoted:
                # for NAME [in WORDS]; do ... : skip to the separator; the words are data
                if t.text == "select":
                    line.opaque.append("select loop")
                j = i + 1
                while j < len(tokens) and not (isinstance(tokens[j], str) and tokens[j] in (";", "\n")) and not (
                        isinstance(tokens[j], Word) and tokens[j].text == "do"):
                    if isinstance(tokens[j], Word) and tokens[j].substitution:
                        line.opaque.append("command substitution")
                    j += 1
                i = j
                continue
            if words == [] and t.text == "case" and not t.quoted:
                line.opaque.append("case statement")
            if words == [] and t.text in ("[[", "((") and not t.quoted:
                close = "]]" if t.text == "[[" else "))"
                j = i + 1
                while j < len(tokens) and not (isinstance(tokens[j], Word) and tokens[j].text == close):
                    if isinstance(tokens[j], Word) and tokens[j].substitution:
                        line.opaque.append("command substitution")
                    j += 1
                i = j + 1
                continue
            words.append(t)
            expect_word = False
            i += 1
            continue
        op = t
        if op in REDIRECTS:
            if i + 1 >= len(tokens) or not isinstance(tokens[i + 1], Word):
                raise ShellParseError(f"redirection {op!r} without a target")
            target = tokens[i + 1]
            assert isinstance(target, Word)
            if op in ("<<",):
                line.opaque.append("here-document")
            if target.substitution:
                line.opaque.append("command substitution")
            # a numeric word just before a redirection is the fd, not an argument
            if words and re.fullmatch(r"\d+", words[-1].raw) and not words[-1].quoted:
                words.pop()
            i += 2
            continue
        # separators
        if op == "(":
            if words:  # name ( ) -> function definition
                line.opaque.append("function definition")
                words = []
            depth += 1
        elif op == ")":
            depth -= 1
            if depth < 0:
                raise ShellParseError("unbalanced )")
        if words:
            _simple(words, line, piped_in)
            words = []
        elif op in ("|", "|&", "&&", "||") and (prev_op in ("|", "|&", "&&", "||", None) and not line.commands):
            raise ShellParseError(f"syntax error near {op!r}")
        piped_in = op in ("|", "|&")
        expect_word = op in ("|", "|&", "&&", "||")
        prev_op = op
        i += 1
    if words:
        _simple(words, line, piped_in)
    elif expect_word:
        raise ShellParseError(f"line ends with {prev_op!r}")
    if depth != 0:
        raise ShellParseError("unbalanced (")
    return line
