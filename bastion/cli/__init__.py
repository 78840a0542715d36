"""The ``bastion`` command."""

from bastion.cli.main import main

__all__ = ["main"]
