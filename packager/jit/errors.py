"""Errors of just-in-time packaging, beyond the packager's own
(:mod:`cadenza.packager.errors`: a source that cannot be read is an ``InputError``,
an encoder that fails an ``EncodeError``).  Each carries its fields."""

from __future__ import annotations

from cadenza.packager.errors import PackagerError


class SegmentNumberError(PackagerError, ValueError):
    """A segment number outside the rendition (they run from 1 to ``count``)."""

    def __init__(self, track_id: str, rendition_id: str, number: int, count: int) -> None:
        self.track_id = track_id
        self.rendition_id = rendition_id
        self.number = number
        self.count = count
        super().__init__(
            f"{track_id}/{rendition_id}: no segment {number} (segments run from 1 to {count})"
        )


class UnknownRenditionError(PackagerError, KeyError):
    """A rendition id the track's presentation does not hold."""

    def __init__(self, track_id: str, rendition_id: str, known: tuple[str, ...]) -> None:
        self.track_id = track_id
        self.rendition_id = rendition_id
        self.known = known
        super().__init__(
            f"{track_id}: no rendition {rendition_id!r} (it has {', '.join(known) or 'none'})"
        )
