"""``cadenza ladder``: see :mod:`origin.abr.cli`."""

from origin.abr.cli import add_ladder_arguments as add_arguments
from origin.abr.cli import run_ladder as run

__all__ = ["add_arguments", "run"]
