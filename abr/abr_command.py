"""``cadenza abr``: see :mod:`cadenza.abr.cli`."""

from cadenza.abr.cli import add_abr_arguments as add_arguments
from cadenza.abr.cli import run_abr as run

__all__ = ["add_arguments", "run"]
