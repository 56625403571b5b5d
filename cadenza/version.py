"""The installed cadenza version, as one place to read it from.

The version is declared once, in ``pyproject.toml``; an installed distribution (a wheel,
or ``pip install -e .``) carries it in its metadata, which :func:`version` reads. A
checkout imported without being installed has no metadata and reports ``0+unknown``
(a PEP 440 local version that sorts below every release). The packager, which may not
import this package (tests/test_layering.py), reads the same metadata the same way
(``cadenza.packager.fingerprint.cadenza_version``) to stamp what it writes.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _distribution_version
from typing import Final

DISTRIBUTION: Final = "cadenza"
UNKNOWN: Final = "0+unknown"


@cache
def version() -> str:
    """The version of the installed ``cadenza`` distribution, e.g. ``0.1.0``."""
    try:
        return _distribution_version(DISTRIBUTION)
    except PackageNotFoundError:
        return UNKNOWN
