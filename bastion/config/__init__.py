"""Load and validate the bastion's single YAML config file.

Every error names the file, the line and the key (``bastion.yaml:12: resources.db.port: ...``). The package is
split by what each part does: :mod:`~bastion.config.schema`, :mod:`~bastion.config.resources` and
:mod:`~bastion.config.rules` hold the pydantic models (``extra="forbid"`` so typos are errors);
:mod:`~bastion.config.loader` reads the YAML with a line for every key and turns pydantic's error locations back
into lines; :mod:`~bastion.config.checks` checks what the schema cannot (files, keys, cross-references);
:mod:`~bastion.config.problems` is how every problem is named. This module re-exports what the rest of the
bastion uses, so callers import from ``bastion.config`` and never depend on that split.
"""

from __future__ import annotations

from bastion.config.loader import load_config
from bastion.config.problems import ConfigError
from bastion.config.resources import KubeResource, PgResource, SshResource
from bastion.config.schema import Config, OidcModel

__all__ = ["Config", "ConfigError", "KubeResource", "OidcModel", "PgResource", "SshResource", "load_config"]
