"""Command-line value types shared by ``cadenza package``, ``cadenza segment`` and
``cadenza live``.

Kept free of heavy imports: ``cadenza segment`` loads neither numpy nor the encoders.
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from typing import Final

MIN_SEGMENT_S: Final = Fraction(1, 2)
MAX_SEGMENT_S: Final = Fraction(60)


def segment_duration(text: str) -> Fraction:
    """``--segment-duration``: seconds, exact (``4``, ``3.2``, ``96/25``), 0.5 to 60."""
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not MIN_SEGMENT_S <= value <= MAX_SEGMENT_S:
        raise argparse.ArgumentTypeError(
            f"must be between {float(MIN_SEGMENT_S)} and {float(MAX_SEGMENT_S)} seconds"
        )
    return value


def positive_seconds(text: str) -> float:
    """A duration in seconds, more than 0 (``--timeout``, ``--window``...)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value
