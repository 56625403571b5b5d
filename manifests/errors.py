"""Errors raised by the pure manifest layer.  Each carries the fields a caller
needs to act on it, and a message a user can read."""

from __future__ import annotations


class ManifestError(Exception):
    """Base class for every error in ``manifests``."""


class InvalidPresentationError(ManifestError):
    """A ``presentation.json`` document (or dict) that does not describe a valid presentation."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"invalid presentation: {field}: {reason}")


class ManifestParseError(ManifestError):
    """An HLS playlist or DASH MPD that cannot be parsed back into the model."""

    def __init__(self, protocol: str, reason: str) -> None:
        self.protocol = protocol
        self.reason = reason
        super().__init__(f"cannot parse {protocol} manifest: {reason}")


class NoMatchingRenditionsError(ManifestError):
    """A rendition filter that leaves nothing to serve."""

    def __init__(self, criteria: str) -> None:
        self.criteria = criteria
        super().__init__(f"no rendition matches {criteria}")


class InvalidLadderError(ManifestError):
    """A ladder that does not validate: ``where`` names the rung (or codec, or key)."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"ladder {where}: {reason}")


class LadderSyntaxError(InvalidLadderError):
    """Ladder text that is not valid TOML or JSON at all (``fmt``: ``toml`` or ``json``)."""

    def __init__(self, fmt: str, reason: str) -> None:
        self.fmt = fmt
        super().__init__("document", f"not valid {fmt.upper()}: {reason}")


class NotSwitchableError(ManifestError):
    """A presentation that offers nothing for the origin to decide: no switching group
    holds two renditions or more (``groups`` names the groups there are), or its layout
    addresses segments by byte range rather than by file.  The origin answers 409."""

    def __init__(self, track_id: str, reason: str, groups: tuple[str, ...]) -> None:
        self.track_id = track_id
        self.reason = reason
        self.groups = groups
        super().__init__(f"{track_id}: no origin-decided playback: {reason}")


class InvalidBitrateHintError(ManifestError):
    """Bitrate guidance out of order: it needs ``min <= start <= max`` (bit/s, min 0 if None)."""

    def __init__(self, start_bitrate_bps: int, max_bitrate_bps: int, min_bitrate_bps: int) -> None:
        self.start_bitrate_bps = start_bitrate_bps
        self.max_bitrate_bps = max_bitrate_bps
        self.min_bitrate_bps = min_bitrate_bps
        super().__init__(
            f"bitrate hint needs 0 <= min <= start <= max, got min {min_bitrate_bps}, "
            f"start {start_bitrate_bps}, max {max_bitrate_bps}"
        )


class InvalidEncryptionError(ManifestError):
    """A rendition's encryption that does not validate: ``field`` names the part at fault."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"invalid encryption {field}: {reason}")


class InvalidLiveStateError(InvalidPresentationError):
    """A ``live.json`` document that does not describe a valid live stream: ``field``
    names the field at fault (``renditions[0].segments[3].parts[1].size_bytes``)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(field, reason)
        self.args = (f"invalid live state: {field}: {reason}",)
