"""The live answers' errors, each with the HTTP status the edge maps it to."""

from __future__ import annotations

from cadenza.origin.errors import BadRequestError, OriginError


class DeliveryDirectiveError(BadRequestError):
    """A malformed or refused ``_HLS_msn``/``_HLS_part``/``_HLS_skip`` (RFC 8216bis
    6.2.5.2): ``400``."""

    code = "bad_delivery_directive"

    def __init__(self, argument: str, value: str | None, reason: str) -> None:
        self.argument = argument
        self.value = value
        self.reason = reason
        super().__init__(f"{argument}={value!r}: {reason}")


class LiveNotReadyError(OriginError):
    """What a request waited for did not appear within the time the spec gives
    (RFC 8216bis 6.2.5.2: three target durations): ``503``."""

    status = 503
    code = "live_not_ready"

    def __init__(self, track: str, what: str, waited_s: float) -> None:
        self.track = track
        self.what = what
        self.waited_s = waited_s
        super().__init__(f"{track}: {what} not available after {waited_s:g} s")


class LiveTrackError(Exception):
    """A manifest of a live track asked on the fast transport: rendered per
    request on the aiohttp path, so the fast transport hands it over."""

    def __init__(self, key: str) -> None:
        super().__init__(f"{key}: a live track's manifest")
        self.key = key
