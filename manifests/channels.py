"""Which channel count an HLS multivariant playlist lists, and the ``?channels=`` filter.

A multichannel source is packaged with its own renditions (6 channels for 5.1) and
stereo downmix renditions (:mod:`cadenza.packager.downmix`).  In an audio-only HLS
presentation every rendition is an ``EXT-X-STREAM-INF`` variant, and RFC 8216 gives
a variant no channel count: ``CHANNELS`` is an attribute of ``EXT-X-MEDIA`` only
(4.3.4.1), and 4.3.4.2 asks only that variants be encodings of the same content.
A player adapting between variants may therefore switch from 5.1 to stereo and back
in mid-stream: hls.js 1.x groups variants into codec sets by codec family (``mp4a``,
``opus``), knows channel counts only from ``EXT-X-MEDIA`` audio groups, and adapts
freely within a codec set, so a 6-channel AAC and a stereo AAC variant are one set
to it.  The decoder then changes layout at a segment boundary: an audible jump, and
with the loudness of each set differing, a level change too.

So a multivariant playlist lists the variants of **one** channel count
(:func:`hls_channel_count`): stereo when the presentation has it (every device
plays it), else the fewest channels present.  ``?channels=6`` on ``master.m3u8`` or
``manifest.mpd`` keeps only the renditions of that count (:func:`keep_channels`), so
the multichannel set is one query away, next to ``?codec=``.  DASH needs no default:
its MPD puts each channel count in an AdaptationSet of its own
(:mod:`cadenza.manifests.dash`), and players switch within an AdaptationSet only
(ISO/IEC 23009-1 5.3.3.1).

Loudness follows the channel count: a stereo downmix is measured on its own (its
BS.775 sum is normalised so that nothing clips, about 7.7 dB below a 5.1 source) and
carries its figures as the rendition's ``loudness``; :func:`loudness_of` gives the
figures a manifest writes for the renditions it lists.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final

from cadenza.manifests.errors import NoMatchingRenditionsError
from cadenza.manifests.filters import InvalidFilterError, P

if TYPE_CHECKING:
    from cadenza.manifests.model import Loudness, Presentation, Rendition

CHANNELS_QUERY: Final = "channels"
DEFAULT_HLS_CHANNELS: Final = 2  # stereo: the widest reach
MAX_CHANNELS: Final = 64


def hls_channel_count(counts: Iterable[int]) -> int | None:
    """Of the channel counts present, the one an HLS multivariant playlist lists:
    stereo when present, else the fewest; None for none."""
    present = set(counts)
    if not present:
        return None
    return DEFAULT_HLS_CHANNELS if DEFAULT_HLS_CHANNELS in present else min(present)


def hls_renditions(renditions: Sequence[Rendition]) -> list[Rendition]:
    """The renditions an HLS multivariant playlist lists (:func:`hls_channel_count`),
    in their order."""
    count = hls_channel_count(r.channels for r in renditions)
    return [r for r in renditions if r.channels == count]


def parse_channels(raw: str) -> int:
    """The value of ``?channels=``: a whole number of channels, 1 to 64."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 2 or not 1 <= int(raw) <= MAX_CHANNELS:
        raise InvalidFilterError(
            CHANNELS_QUERY, raw, f"expected a channel count, 1 to {MAX_CHANNELS}"
        )
    return int(raw)


def keep_channels(p: P, channels: int) -> P:
    """``p`` with only its ``channels``-channel renditions; raises
    :class:`~cadenza.manifests.errors.NoMatchingRenditionsError` when it has none."""
    kept = tuple(r for r in p.renditions if r.channels == channels)
    if not kept:
        raise NoMatchingRenditionsError(f"{CHANNELS_QUERY}={channels}")
    return dataclasses.replace(p, renditions=kept)


def loudness_of(p: Presentation, renditions: Sequence[Rendition]) -> Loudness | None:
    """The loudness a manifest writes for ``renditions`` (one channel count): their own
    when they all carry the same figures (a stereo downmix's), else the track's."""
    own = {r.loudness for r in renditions}
    if len(own) == 1 and (figures := next(iter(own))) is not None:
        return figures
    return p.loudness
