"""What every part of the config schema shares: strict models, name patterns, session time limits."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
"""Names the admin gives things (users, resources, roles, policies, rules): safe in logs, menus and file names."""

GROUP_RE = r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$"
"""Group names: wider than NAME_RE because identity providers send groups like ``org:team`` or ``a@b/c``."""


class StrictModel(BaseModel):
    """Base of every config section: an unknown key is an error (typos must not be silently ignored), and a loaded
    config cannot be changed behind the daemon's back."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TimeLimits(StrictModel):
    """Session time limits: the daemon's (``limits``), or a resource's own, which win while a session on it is open.
    """

    # no input on a connection with a terminal (the menu, an interactive session) for this long closes it
    idle_timeout: Annotated[float, Field(ge=5, le=7 * 86400)] | None = None
    # a brokered session (any form) is closed when it has lasted this long
    max_session_duration: Annotated[float, Field(ge=5, le=30 * 86400)] | None = None
