"""What the ``bastion`` commands share: finding and loading the config, opening its store, logging, and the
argument types for times."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bastion.config import Config, ConfigError, load_config
from bastion.store.when import BadTime, parse_when

if TYPE_CHECKING:  # imported when a command needs it: the store pulls in SQLAlchemy, --help should not
    from bastion.store.db import Store

DEFAULT_CONFIGS = ("/etc/bastion/bastion.yaml", ".bastion-demo/bastion.yaml")


def setup_logging(verbose: bool, log_dir: Path | None = None, log_format: str = "text") -> None:
    """Log to stderr (and to ``log_dir/bastion.log`` when given); DEBUG with ``verbose``, else INFO. ``log_format``
    ``json``: one JSON object per line (:mod:`bastion.metrics.logs`; the daemon also switches to the config's
    ``log_format`` as it starts)."""
    from bastion.metrics.logs import formatter

    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_dir / "bastion.log"))
    for handler in handlers:
        handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=handlers)
    # asyncssh logs client env values and other request details at debug level: keep it quiet
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # request lines: noise, and URLs may carry codes


def config_path(args: argparse.Namespace) -> str:
    """--config (of the subcommand, else the top level), else $BASTION_CONFIG, else the first of DEFAULT_CONFIGS
    that exists."""
    path = getattr(args, "config_file", None) or args.config or os.environ.get("BASTION_CONFIG")
    if path:
        return path
    for candidate in DEFAULT_CONFIGS:
        if Path(candidate).exists():
            return candidate
    raise SystemExit("bastion: no config file (use --config FILE or set BASTION_CONFIG)")


def load_for_command(args: argparse.Namespace, *, check_files: bool = False) -> Config | None:
    """The command's config, or None after printing its problems."""
    try:
        return load_config(config_path(args), check_files=check_files)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return None


def open_store(args: argparse.Namespace) -> tuple[Config, Store] | None:
    """The command's config (None after printing its problems) and its migrated store."""
    from bastion.store.db import Store

    cfg = load_for_command(args)
    if cfg is None:
        return None
    store = Store(cfg.database_url)
    store.migrate()
    return cfg, store


class BadTimeArg(argparse.ArgumentTypeError, BadTime):
    """A date, age or offset on the command line that cannot be read (argparse prints its message as it is)."""


def when_arg(text: str) -> datetime:
    """``parse_when`` as an argparse type: an ISO date/time or an age (``7d``)."""
    try:
        return parse_when(text)
    except BadTime as e:
        raise BadTimeArg(str(e)) from None


def parse_offset(text: str) -> float:
    """Seconds into a recording: ``90``, ``1:30``, ``1:02:03`` (an argparse type)."""
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        raise BadTimeArg(f"{text!r}: give seconds (90) or [h:]m:ss (1:30)") from None
    if not 1 <= len(parts) <= 3 or any(p < 0 for p in parts):
        raise BadTimeArg(f"{text!r}: give seconds (90) or [h:]m:ss (1:30)")
    total = 0.0
    for p in parts:
        total = total * 60 + p
    return total
