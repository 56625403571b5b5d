"""Rendition filters for manifest requests, like Unified Origin's ``filter``
and MediaPackage's ``aws.manifestfilter``: ``?codec=aac,opus``,
``?min_bitrate=64`` and ``?max_bitrate=256`` (kb/s)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from cadenza.manifests.errors import ManifestError, NoMatchingRenditionsError
from cadenza.manifests.live import LivePresentation, LiveRendition
from cadenza.manifests.model import Codec, Presentation, Rendition

MAX_KBPS = 10_000_000
# A VOD presentation or a live stream: both list renditions with codecs and bitrates.
P = TypeVar("P", Presentation, LivePresentation)


class InvalidFilterError(ManifestError):
    """A filter query parameter with a value cadenza cannot use."""

    def __init__(self, parameter: str, value: str, reason: str) -> None:
        self.parameter = parameter
        self.value = value
        self.reason = reason
        super().__init__(f"invalid {parameter}={value!r}: {reason}")


def _bitrate_bps(r: Rendition) -> int:
    return r.target_bitrate_bps if r.target_bitrate_bps is not None else r.average_bitrate_bps


@dataclass(frozen=True, slots=True)
class RenditionFilter:
    codecs: frozenset[Codec] | None = None
    min_bitrate_bps: int | None = None
    max_bitrate_bps: int | None = None

    @property
    def is_empty(self) -> bool:
        return self.codecs is None and self.min_bitrate_bps is None and self.max_bitrate_bps is None

    def matches(self, r: Rendition) -> bool:
        return self._matches_rung(r.codec, _bitrate_bps(r))

    def _keeps(self, r: Rendition | LiveRendition) -> bool:
        if isinstance(r, Rendition):
            return self.matches(r)
        return self._matches_rung(Codec(r.codec), r.bitrate_bps)

    def _matches_rung(self, codec: Codec, bitrate_bps: int) -> bool:
        return (
            (self.codecs is None or codec in self.codecs)
            and (self.min_bitrate_bps is None or bitrate_bps >= self.min_bitrate_bps)
            and (self.max_bitrate_bps is None or bitrate_bps <= self.max_bitrate_bps)
        )

    def describe(self) -> str:
        parts = []
        if self.codecs is not None:
            parts.append("codec=" + ",".join(sorted(c.value for c in self.codecs)))
        if self.min_bitrate_bps is not None:
            parts.append(f"min_bitrate={self.min_bitrate_bps // 1000}")
        if self.max_bitrate_bps is not None:
            parts.append(f"max_bitrate={self.max_bitrate_bps // 1000}")
        return "&".join(parts) or "no filter"

    def apply(self, p: P) -> P:
        """``p`` with its matching renditions: a VOD presentation, or a live stream's
        (its master playlist and MPD; each media playlist is one rendition's)."""
        kept = tuple(r for r in p.renditions if self._keeps(r))
        if not kept:
            raise NoMatchingRenditionsError(self.describe())
        return dataclasses.replace(p, renditions=kept)


def _kbps(name: str, value: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 8:
        raise InvalidFilterError(name, value, "expected a whole number of kb/s")
    kbps = int(value)
    if kbps > MAX_KBPS:
        raise InvalidFilterError(name, value, "too large")
    return kbps * 1000


def parse_filter_query(query: Mapping[str, str]) -> RenditionFilter:
    codecs: frozenset[Codec] | None = None
    if "codec" in query:
        raw = query["codec"]
        names = [n.strip().lower() for n in raw.split(",") if n.strip()]
        if not names:
            raise InvalidFilterError("codec", raw, "empty codec list")
        try:
            codecs = frozenset(Codec(n) for n in names)
        except ValueError:
            known = ", ".join(c.value for c in Codec)
            raise InvalidFilterError("codec", raw, f"unknown codec (known: {known})") from None
    low = _kbps("min_bitrate", query["min_bitrate"]) if "min_bitrate" in query else None
    high = _kbps("max_bitrate", query["max_bitrate"]) if "max_bitrate" in query else None
    if low is not None and high is not None and low > high:
        raise InvalidFilterError("min_bitrate", query["min_bitrate"], "is above max_bitrate")
    return RenditionFilter(codecs, low, high)
