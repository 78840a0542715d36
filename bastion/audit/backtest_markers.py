"""Reading past decisions back out of a recording's markers, for ``bastion policy backtest``.

A decision is recorded as a marker whose text was written for people: ``policy: SUMMARY: TEXT`` (a line typed at a
shell or psql prompt; the exec form's verdict is ``policy: SUMMARY`` after the ``session ... opened`` marker),
``sql: SUMMARY: TEXT``, ``kube: SUMMARY: DESCRIPTION`` and ``exec: DESCRIPTION[: SUMMARY]`` (bastion-guard), where
``SUMMARY`` is :meth:`policies.engine.Decision.summary`. This module turns such a marker back into what the engine
was asked, so that the *same* engine functions can be asked again. Where the marker does not hold every fact the
live path had (a guard exec's file identity, whether a kube exec had a terminal), the facts are inferred the strict
way and the judgement says so (``inferred``); where it cannot be read back at all, the judgement carries the reason
(``problem``) and is reported, never dropped.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from policies.execs import CODE_RULE, LOADER_ENV, LOADER_RULE, UNKNOWN_RULE, Exec
from policies.kube import METHOD_VERBS, KubeRequest
from policies.sqlmask import COPY_RULE, PREDICATE_RULE, UNRESOLVED_RULE

ACTIONS = ("allow", "warn", "require_approval", "block")
_SUMMARY = re.compile(r"(allow|warn|require_approval|block) by (?:rule ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")"
                      r"|the default of the policy)(?:: |\Z)")
_EXEC_SUMMARY = re.compile(r": (?=(?:warn|require_approval|block) by (?:rule ['\"]|the default of the policy: ))")
_KUBE_DESCRIBE = re.compile(r"(?P<verb>[a-z]+) (?P<res>[a-z0-9*-]+(?:\.[a-z0-9.-]+)?(?:/[a-z0-9]+)?)"
                            r"(?: (?P<name>[^ ]+?))?(?: -n (?P<ns>[^ ]+))?(?:: (?P<cmd>.*))?", re.DOTALL)
_VERB_METHOD = {"get": "GET", "list": "GET", "watch": "GET", "create": "POST", "update": "PUT", "patch": "PATCH",
                "delete": "DELETE", "deletecollection": "DELETE"}
MASKING_RULES = frozenset({COPY_RULE, PREDICATE_RULE, UNRESOLVED_RULE})
GUARD_RULES = frozenset({UNKNOWN_RULE, LOADER_RULE, CODE_RULE})
# the engine's own reasons for a decision without a rule: what evaluate_sql says (anything else without a rule is a
# refusal of the wire protocol by the proxy, not a policy decision)
_SQL_ENGINE_REASONS = re.compile(r".*(no rule matched; default is|within the row limit; default is)|nothing to run"
                                 r"|the SQL cannot be parsed|dynamic SQL runs statements", re.DOTALL)
# how the engine words a decision no rule took (policies/engine.py: judge_command, evaluate_sql, evaluate_kube)
_ENGINE_REASON = re.compile(r".*?: (?:no rule matched|within the row limit); default is "
                            r"(?:allow|warn|require_approval|block)|nothing to run|discovery", re.DOTALL)
SYSTEM_DIRS = ("/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/", "/usr/lib/", "/usr/libexec/", "/usr/share/",
               "/lib/", "/usr/local/bin/", "/usr/local/sbin/")


@dataclass(frozen=True)
class Summary:
    """A recorded decision: its action label, its rule (None: the policy's default or the engine itself), and what
    followed ``ACTION by ...: `` in the marker (the reason, then the judged text for most kinds)."""

    action: str
    rule: str | None
    rest: str


@dataclass(frozen=True)
class Judged:
    """One past decision, ready to be judged again: where it is (``session``, ``t`` seconds into the recording;
    None for a command refused before a session opened), who and where, what kind of thing was judged and how
    (``kind``: shell, exec-form, psql, sql, kube, exec; ``terminal`` for the exec form), the decision then, and either
    what to give the engine (``text``, ``subject``) or why that is impossible (``problem``)."""

    session: str | None
    t: float | None
    user: str
    resource: str
    kind: str
    text: str
    action: str
    rule: str | None
    terminal: bool = True
    subject: KubeRequest | Exec | None = None
    inferred: str = ""
    problem: str | None = None
    groups: tuple[str, ...] = field(default=())


def parse_summary(text: str) -> Summary | None:
    """``block by rule 'no-rm': why: rm -f x`` -> Summary('block', 'no-rm', 'why: rm -f x'); None when ``text`` does
    not start with a decision summary (an approval, an observation, a stream event)."""
    m = _SUMMARY.match(text)
    if m is None:
        return None
    rule = ast.literal_eval(m.group(2)) if m.group(2) else None
    return Summary(m.group(1), rule if isinstance(rule, str) else None, text[m.end():])


def split_exec(body: str) -> tuple[str, Summary]:
    """An ``exec:`` marker's body: the exec's description and the decision (a plain allow has no summary). Words
    of the description are quoted by :func:`policies.execs.shown`, so `` : block by rule '`` cannot be one."""
    parts = _EXEC_SUMMARY.split(body, maxsplit=1)
    s = parse_summary(parts[1]) if len(parts) > 1 else None
    return parts[0], s if s is not None else Summary("allow", None, "")


def split_reason(rest: str, rule_reasons: frozenset[str], reproduces: Callable[[str, str], bool],
                 rule: str | None = None) -> str | None:
    """The judged text at the end of ``REASON: TEXT``, where either part may hold ``: ``: the only split, else the
    one after a reason some rule of the configs gives or one the engine words itself (``rm: no rule matched;
    default is allow``, ``rm matches rule 'r'``), else the one whose text, judged again, reproduces the recorded
    reason exactly. None: the marker cannot be told apart (reported, not guessed)."""
    cuts = [m.start() for m in re.finditer(": ", rest)]
    if not cuts:
        return None
    if len(cuts) == 1:
        return rest[cuts[0] + 2:]
    for reason in sorted(rule_reasons, key=len, reverse=True):
        if reason and rest.startswith(reason + ": "):
            return rest[len(reason) + 2:]
    own = _ENGINE_REASON if rule is None else re.compile(r".*? matches rule " + re.escape(repr(rule)), re.DOTALL)
    for c in cuts:
        if own.fullmatch(rest[:c]):
            return rest[c + 2:]
    fits = [rest[c + 2:] for c in cuts if reproduces(rest[:c], rest[c + 2:])]
    return fits[0] if len(fits) == 1 else None


def sql_runtime(s: Summary) -> str | None:
    """Why a ``sql:`` marker is not a policy decision that can be taken again offline (None: it is one): masking
    refusals depend on the live catalog, row-limit outcomes on the rows a statement touched, and the proxy's own
    refusals of the wire protocol on the session's state."""
    if s.rule in MASKING_RULES:
        return f"a masking refusal (rule {s.rule!r}): it depends on the database's catalog, which is not recorded"
    if "rolled back" in s.rest or "row counter went back" in s.rest:
        return "a row-limit outcome: it depends on the rows the statement touched"
    if s.rule is None and s.action == "block" and not _SQL_ENGINE_REASONS.match(s.rest):
        return "a refusal of the wire protocol by the proxy, not a policy decision"
    return None


def kube_request(text: str) -> KubeRequest | str:
    """The request a ``kube:`` marker describes (:meth:`KubeRequest.describe`), for the engine; a message when the
    description cannot be read back. A non-resource request (``GET /healthz``) is its method and path; a resource
    request is rebuilt from its verb, resource, name, namespace and exec argv (the API version, which no rule
    matches, is left empty; an exec/attach is taken as non-interactive, so its argv is judged too: the stricter
    reading)."""
    method, _, target = text.partition(" ")
    if method in METHOD_VERBS:
        return f"{method} {target}"  # re-parsed by the caller with parse_request, as the proxy did
    m = _KUBE_DESCRIBE.fullmatch(text)
    if m is None or m.group("verb") not in _VERB_METHOD:
        return f"not a Kubernetes request description: {text[:80]!r}"
    res, _, sub = m.group("res").partition("/")
    resource, _, group = res.partition(".")
    ns, name = m.group("ns") or "", m.group("name") or ""
    command = tuple(m.group("cmd").split(" ")) if m.group("cmd") else ()
    path = ("/api/v1" if not group else f"/apis/{group}/v1") + (f"/namespaces/{ns}" if ns else "") + f"/{resource}" \
        + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")
    return KubeRequest(_VERB_METHOD[m.group("verb")], path, m.group("verb"), True, group, "", ns, resource, sub, name,
                       command, False)


def _unquote_word(word: str) -> str:
    """One word as :func:`policies.execs.shown` wrote it: bare, ``'...'`` (shlex.quote, ``'"'"'`` inside), or
    ``$'...'`` with backslash escapes (a byte of an undecodable name as ``\\xff``)."""
    out, i = [], 0
    while i < len(word):
        if word.startswith("$'", i):
            j = i + 2
            while j < len(word) and word[j] != "'":
                if word[j] == "\\" and j + 1 < len(word):
                    c = word[j + 1]
                    size = {"x": 2, "u": 4, "U": 8}.get(c)
                    if size is not None:
                        code = int(word[j + 2:j + 2 + size], 16)
                        out.append(chr(0xDC00 + code) if c == "x" and code >= 0x80 else chr(code))
                        j += 2 + size
                        continue
                    out.append({"n": "\n", "r": "\r", "t": "\t"}.get(c, c))
                    j += 2
                    continue
                out.append(word[j])
                j += 1
            i = j + 1
        elif word[i] == "'":
            j = word.index("'", i + 1)
            out.append(word[i + 1:j])
            i = j + 1
        elif word[i] == '"':
            j = word.index('"', i + 1)
            out.append(word[i + 1:j])
            i = j + 1
        else:
            out.append(word[i])
            i += 1
    return "".join(out)


def _words(text: str) -> list[str]:
    """Split a :meth:`Exec.describe` text into its words (quotes keep their spaces)."""
    words, cur, quote = [], "", ""
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            cur += c
            if c == "\\" and quote == "$'" and i + 1 < len(text):
                cur += text[i + 1]
                i += 1
            elif c == quote[-1]:
                quote = ""
        elif c == " ":
            words.append(cur)
            cur = ""
        elif c in "'\"":
            quote = "$'" if cur.endswith("$") and c == "'" else c
            cur += c
        else:
            cur += c
        i += 1
    if quote:
        raise ValueError("an unterminated quote")
    words.append(cur)
    return [_unquote_word(w) for w in words if w != ""]


def guard_exec(text: str, rule: str | None, first: bool) -> tuple[Exec, str]:
    """The exec an ``exec:`` marker describes, and which of its facts were inferred (ValueError: unreadable).

    The marker holds the file, a copy's original, the argv and the parent chain. The file's other names, its
    trust, the loader variables and the trusted script arguments are the guard's findings that it does not hold:
    the file counts as trusted unless the recorded decision was the guard's unknown-program refusal, its names are
    its base name, a loader variable is assumed only where the recorded decision was the loader refusal, and script
    arguments are trusted when they are absolute paths in the system's directories. ``first``: the session's first
    exec (its own program, which the guard reports as such)."""
    if "[... " in text and text.endswith(" more characters]"):
        raise ValueError("the marker was cut (an argv longer than the marker keeps)")
    chain: tuple[str, ...] = ()
    if text.endswith("]") and " [by " in text:
        text, _, by = text.rpartition(" [by ")
        chain = tuple(_unquote_word(w) for w in by[:-1].split(" \u2190 "))
    copy_of = None
    if " (a copy of " in text:
        head, _, tail = text.partition(" (a copy of ")
        original, _, rest = tail.partition(") ")
        copy_of, text = _unquote_word(original), f"{head} {rest}"
    words = _words(text.replace(" (no argv)", ""))
    if not words:
        raise ValueError("no program in the marker")
    exe, argv = words[0], tuple(words[1:])
    env = (sorted(LOADER_ENV)[0],) if rule == LOADER_RULE else ()
    trusted = rule != UNKNOWN_RULE
    scripts = tuple(i for i, a in enumerate(argv[1:5], start=1) if a.startswith(SYSTEM_DIRS))
    ev = Exec(exe=exe, argv=argv, chain=chain, names=(exe.rsplit("/", 1)[-1],), trusted=trusted and copy_of is None,
              copy_of=copy_of, first=first, env=env, trusted_args=scripts)
    inferred = "the guard's findings (trust, other names, loader variables, system scripts) inferred from the marker"
    return ev, inferred
