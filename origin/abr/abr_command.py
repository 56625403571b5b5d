"""``cadenza abr``: see :mod:`origin.abr.cli`."""

from origin.abr.cli import add_abr_arguments as add_arguments
from origin.abr.cli import run_abr as run

__all__ = ["add_arguments", "run"]
