"""What one segment request tells the origin's controller: the player's CMCD about
its previous object, the origin's own delivery measurement, and the user's and
device's limits.  Every field is optional; an absent one is None (or False)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from cadenza.abr.cmcd_keys import Cmcd
from cadenza.abr.frozen import fast_init

# CTA-5004 rounds ``mtp`` to the nearest 100 kb/s; a report of 0 means below 50, and is
# read as 25 (the session's estimate and the controller's samples alike).
MTP_STEP_KBPS: Final = 100
MTP_ZERO_KBPS: Final = MTP_STEP_KBPS / 4


class Ect(enum.StrEnum):
    """Effective connection type: the ``ECT`` client hint and the Network Information
    API's ``effectiveType`` (WICG Network Information API, "effective connection types")."""

    SLOW_2G = "slow-2g"
    G2 = "2g"
    G3 = "3g"
    G4 = "4g"


# The Network Information API's table: the largest downlink of each type.
ECT_MAX_DOWNLINK_BPS: Final[Mapping[Ect, float | None]] = {
    Ect.SLOW_2G: 50_000.0,
    Ect.G2: 70_000.0,
    Ect.G3: 700_000.0,
    Ect.G4: None,
}
# The start estimate an ECT alone gives: half the type's largest downlink; for 4g,
# twice the 3g ceiling.
ECT_PRIOR_BPS: Final[Mapping[Ect, float]] = {
    Ect.SLOW_2G: 25_000.0,
    Ect.G2: 35_000.0,
    Ect.G3: 350_000.0,
    Ect.G4: 1_400_000.0,
}


@fast_init
@dataclass(frozen=True, slots=True)
class Signals:
    """One request's inputs.  CMCD (CTA-5004) keys, all about the previous object
    except ``bl`` (the buffer now) and ``su``/``bs`` (this request):

    ``buffer_ms`` ``bl``; ``measured_kbps`` ``mtp`` (rounded to 100 kb/s);
    ``encoded_kbps`` ``br``; ``object_ms`` ``d``; ``startup`` ``su``;
    ``starved`` ``bs``; ``requested_max_kbps`` ``rtp``.

    ``delivery_rate_bps`` is the TCP delivery rate of the previous response
    when the origin served its bytes itself (None after a redirect).
    ``save_data`` is the ``Save-Data: on`` client hint, ``max_bitrate_bps`` a
    limit the user or the service set, ``ect`` the ``ECT`` client hint.
    ``remaining_segments`` is how many segments of the track are left, the
    requested one included (the origin knows the track's segments; None when
    unknown): the plan never looks past the track's end.
    """

    buffer_ms: int | None = None
    measured_kbps: int | None = None
    encoded_kbps: int | None = None
    object_ms: int | None = None
    startup: bool = False
    starved: bool = False
    requested_max_kbps: int | None = None
    delivery_rate_bps: float | None = None
    save_data: bool = False
    max_bitrate_bps: int | None = None
    ect: Ect | None = None
    remaining_segments: int | None = None


NO_SIGNALS: Final = Signals()


def parse_ect(value: str | None) -> Ect | None:
    """The ``ECT`` header's value, or None when absent or unknown."""
    if value is None:
        return None
    try:
        return Ect(value.strip().strip('"').lower())
    except ValueError:
        return None


def parse_save_data(value: str | None) -> bool:
    """``Save-Data: on`` (the Save-Data client hint; other tokens may follow ``;``)."""
    return value is not None and value.split(";")[0].strip().lower() == "on"


def signals_from_cmcd(
    cmcd: Cmcd,
    *,
    delivery_rate_bps: float | None = None,
    save_data: bool = False,
    max_bitrate_bps: int | None = None,
    ect: Ect | None = None,
    remaining_segments: int | None = None,
) -> Signals:
    """The controller's inputs from a parsed CMCD payload and the origin's own knowledge.

    Negative or zero durations and bitrates are dropped as absent; a zero
    ``mtp`` is kept (it means below 50 kb/s).
    """
    integer = cmcd.integer
    bl = integer("bl")
    mtp = integer("mtp")
    br = integer("br")
    d = integer("d")
    rtp = integer("rtp")
    flags = cmcd.values
    return Signals(
        bl if bl is not None and bl >= 0 else None,
        mtp if mtp is not None and mtp >= 0 else None,
        br if br is not None and br > 0 else None,
        d if d is not None and d > 0 else None,
        flags.get("su") is True,  # cmcd.flag("su")
        flags.get("bs") is True,
        rtp if rtp is not None and rtp > 0 else None,
        delivery_rate_bps,
        save_data,
        max_bitrate_bps,
        ect,
        remaining_segments,
    )
