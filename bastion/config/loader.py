"""Read the config file: YAML with a line for every key, validated by the schema, turned into a :class:`Config`.

pydantic reports locations as key paths; the line map built here from the YAML node tree turns them back into the
lines the admin edits. Everything wrong is reported at once (a :class:`ConfigError` lists every problem), not
one problem per restart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bastion.config.export import export_problems
from bastion.config.notify import notify_problems
from bastion.config.problems import ConfigError, LineMap, Loc, dotted, problem
from bastion.config.resources import KIND_TAGS, KINDS
from bastion.config.rules import policy_set
from bastion.config.schema import Config, FileSchema, LocalUser, resolve_path


class _Loader(yaml.SafeLoader):
    """SafeLoader (no arbitrary objects from a config file); we also walk its node tree for line numbers."""


def _line_map(node: yaml.Node, path: Loc, out: LineMap, dups: list[tuple[int, Loc]]) -> None:
    """Record the line of every key and list item under ``node``, and every key given twice in one mapping
    (plain YAML keeps the last silently: a config where an edit does nothing is worse than an error)."""
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else str(k.start_mark)
            sub = (*path, key)
            if key in seen:
                dups.append((k.start_mark.line + 1, sub))
            seen.add(key)
            out[sub] = k.start_mark.line + 1
            _line_map(v, sub, out, dups)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = (*path, i)
            out[sub] = item.start_mark.line + 1
            _line_map(item, sub, out, dups)


def _parse_yaml(path: Path, text: str) -> tuple[Any, LineMap]:
    """The document and its line map; any YAML error becomes a ConfigError with a line, never a traceback."""
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as e:  # a control character: YAML refuses the whole stream
        line = text[:max(0, e.position)].count("\n") + 1
        raise ConfigError([f"{path}:{line}: invalid YAML: character {e.character:#04x} is not allowed"]) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return {}, {(): 1}
        lines: LineMap = {}
        dups: list[tuple[int, Loc]] = []
        _line_map(node, (), lines, dups)
        if dups:
            raise ConfigError([f"{path}:{line}: {dotted(loc)}: duplicate key" for line, loc in dups])
        return loader.construct_document(node), lines
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        raise ConfigError([f"{path}:{line}: invalid YAML: {e.problem or e.context}"]) from None
    except (yaml.YAMLError, RecursionError) as e:  # anything else the parser refuses (deep nesting, ...)
        raise ConfigError([f"{path}:1: invalid YAML: {str(e).splitlines()[0] if str(e) else type(e).__name__}"]) \
            from None
    finally:
        loader.dispose()


def _without_kind_tag(loc: Loc) -> Loc:
    """Drop the discriminator tag pydantic puts after a resource's name (``resources.k8s.kubernetes.server``).

    The admin never wrote it, and with it the key has no line of its own (the problem would point at the
    resource). Only that one position is looked at, so a resource or user that happens to be called ``ssh`` keeps
    its name, and the tags come from the resource union, so a new kind is covered without touching this.
    """
    if len(loc) > 2 and loc[0] == "resources" and loc[2] in KIND_TAGS:
        return (*loc[:2], *loc[3:])
    return loc


def _pydantic_problems(path: Path, err: ValidationError, lines: LineMap) -> list[str]:
    """Schema errors in the bastion's words: the admin's key path and line, messages about keys, not models."""
    problems = []
    for e in err.errors():
        loc = _without_kind_tag(tuple(e["loc"]))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] == "union_tag_invalid":
            loc = (*loc, "kind")
            msg = f"unknown kind {e.get('input', {}).get('kind')!r} (known kinds: {KINDS})"
        elif e["type"] == "union_tag_not_found":
            msg = f"missing 'kind' (known kinds: {KINDS})"
        problems.append(problem(path, lines, loc, msg))
    return problems


def _database_url(path: Path, db: str) -> str:
    """A relative SQLite file is relative to the config file, like every other path in it."""
    if db.startswith("sqlite:///") and not db.startswith("sqlite:////"):
        rel = db[len("sqlite:///"):]
        if rel and rel != ":memory:":
            return "sqlite:///" + str(resolve_path(path, rel))
    return db


def _user_keys(path: Path, users: dict[str, LocalUser]) -> dict[str, list[str]]:
    """Each local user's public key lines: those written inline, then those in ``authorized_keys_file``.

    A missing file is not an error here (the semantic checks report it when asked to).
    """
    user_keys: dict[str, list[str]] = {}
    for name, u in users.items():
        keys = list(u.authorized_keys)
        if u.authorized_keys_file:
            p = resolve_path(path, u.authorized_keys_file)
            if p.exists():
                keys += [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        user_keys[name] = keys
    return user_keys


def _config(path: Path, schema: FileSchema, lines: LineMap) -> Config:
    """What the file means: paths made absolute, policies compiled, the line map kept for later problems."""
    return Config(
        path=path,
        listen=schema.listen,
        host_keys=[resolve_path(path, p) for p in schema.host_keys],
        database_url=_database_url(path, schema.database),
        recordings_dir=resolve_path(path, schema.recordings_dir),
        log_dir=resolve_path(path, schema.log_dir) if schema.log_dir else None,
        limits=schema.limits,
        users=dict(schema.users),
        user_keys=_user_keys(path, schema.users),
        resources=dict(schema.resources),
        roles=dict(schema.roles),
        policies={n: policy_set(n, p) for n, p in schema.policies.items()},
        sandbox=schema.sandbox,
        kubectl=str(resolve_path(path, schema.kubectl)) if schema.kubectl else None,
        oidc=schema.oidc,
        recordings=schema.recordings, transfers=schema.transfers,
        audit=schema.audit,
        cluster=schema.cluster, processes=schema.processes,
        host_ca_key=resolve_path(path, schema.host_ca_key) if schema.host_ca_key else None,
        notify=schema.notify,
        metrics=schema.metrics, log_format=schema.log_format,
        lines=lines,
    )


def load_config(path: str | Path, *, check_files: bool = True) -> Config:
    """Read, parse and validate a config file; raise :class:`ConfigError` listing every problem.

    ``check_files=False`` skips the semantic checks (referenced files, keys, cross-references), for callers that
    only need the schema.
    """
    path = Path(path).resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([f"{path}:1: cannot read config: {e}"]) from None
    data, lines = _parse_yaml(path, text)
    if not isinstance(data, dict):
        raise ConfigError([f"{path}:1: (top level): must be a mapping of settings"])
    try:
        schema = FileSchema.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_pydantic_problems(path, e, lines)) from None
    cfg = _config(path, schema, lines)
    if check_files:
        # imported here: the checks pull in asyncssh, the sandbox and the audit store, which callers that only
        # need the schema (the policy engine's tests, the menu) should not pay for
        from bastion.config.checks import semantic_checks

        problems = semantic_checks(cfg) + [problem(path, lines, loc, msg) for check in (notify_problems,
                                           export_problems) for loc, msg in check(cfg)]
        if problems:
            raise ConfigError(problems)
    return cfg

