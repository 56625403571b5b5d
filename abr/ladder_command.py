"""``cadenza ladder``: see :mod:`cadenza.abr.cli`."""

from cadenza.abr.cli import add_ladder_arguments as add_arguments
from cadenza.abr.cli import run_ladder as run

__all__ = ["add_arguments", "run"]
