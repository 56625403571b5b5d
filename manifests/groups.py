"""Switching groups: the renditions one init segment can serve.

The origin decides ABR for a session by answering each segment of a group
with one rung's segment (``?abr=origin``, see ``docs/players.md``).  That is
only sound when the player's decoder, configured once from one init segment,
can decode every rung of the group, and when segment *n* of every rung covers
the same samples.  So the rungs of one group share:

- the codec and its RFC 6381 ``codecs`` string (for AAC this carries the
  audio object type, the profile: ``mp4a.40.2`` is AAC-LC, ISO/IEC 14496-3
  1.5.1.1), the sample rate (and so the timescale) and the channel count;
- the decoder configuration the packager recorded (``Rendition.decoder_config``:
  the AudioSpecificConfig of AAC, the ``dOps`` of Opus with its pre-skip,
  channel mapping and input sample rate), when it did;
- the priming and the presentation duration, which the init segment's edit
  list (ISO/IEC 14496-12 8.6.6) carries;
- the segment timeline (every segment's start and duration) and the layout.

FLAC is always a group of one: its ``dfLa`` carries STREAMINFO, with the
stream's own MD5 and sample count.  A rung that differs from the others of its
codec in any of these is never mixed into their group: it forms a group of its
own (with any rungs that match it).

Group ids: per codec, the group with the most rungs (the first in ladder order
among equals) is named after the codec (``aac``), the others ``aac-2``,
``aac-3``... in the same order.  A group's renditions are listed in ascending
bitrate order; its init segment is the top rung's (``aac-320k/init.mp4``),
whose bitrate fields bound every rung's (the packager also writes the inits
of a group byte-identical).

:func:`derive_groups` is the one rule: the packager records its result in
``presentation.json``, and a ``presentation.json`` written before groups
existed gets them from it on load.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import quote

if TYPE_CHECKING:
    from cadenza.manifests.model import Codec, Rendition

GROUP_PREFIX: Final = "group-"
# The query argument that carries the session id on the URIs of origin-decided playback.
SESSION_QUERY: Final = "sid"
_AAC_CODECS_PREFIX: Final = "mp4a.40."


@dataclass(frozen=True, slots=True)
class SwitchGroup:
    """Renditions that share one decoder configuration and one segment timeline.

    ``rendition_ids`` are in ascending bitrate order; ``init_uri`` is the init
    segment that serves all of them, relative to the track folder.
    """

    id: str
    codec: Codec
    codecs: str
    sample_rate_hz: int
    channels: int
    audio_object_type: int | None  # AAC only (ISO/IEC 14496-3 1.5.1.1): 2 is AAC-LC
    rendition_ids: tuple[str, ...]
    init_uri: str

    @property
    def folder(self) -> str:
        """The path segment the origin decides under: ``group-aac``."""
        return GROUP_PREFIX + self.id

    @property
    def switchable(self) -> bool:
        """Whether there is anything to decide: two renditions or more."""
        return len(self.rendition_ids) > 1


def group_id_of_folder(folder: str) -> str | None:
    """``aac`` for the path segment ``group-aac``; None for any other folder."""
    if folder.startswith(GROUP_PREFIX) and len(folder) > len(GROUP_PREFIX):
        return folder[len(GROUP_PREFIX) :]
    return None


def with_session(uri: str, session_id: str | None) -> str:
    """``uri`` with ``?sid=<session_id>`` (percent-encoded, so no ``$``, ``&`` or quote
    survives to break a DASH template or an HLS attribute), or unchanged without one."""
    if session_id is None:
        return uri
    return f"{uri}?{SESSION_QUERY}={quote(session_id, safe='')}"


def audio_object_type(codecs: str) -> int | None:
    """The AAC audio object type an RFC 6381 ``mp4a.40.<aot>`` string names."""
    if not codecs.startswith(_AAC_CODECS_PREFIX):
        return None
    tail = codecs[len(_AAC_CODECS_PREFIX) :]
    return int(tail) if tail.isascii() and tail.isdigit() else None


def nominal_bitrate_bps(rendition: Rendition) -> int:
    """The rung's bitrate as its ladder names it (the measured average for lossless)."""
    if rendition.target_bitrate_bps is not None:
        return rendition.target_bitrate_bps
    return rendition.average_bitrate_bps


def _decoder_key(rendition: Rendition) -> tuple[object, ...] | None:
    """Everything one init segment fixes for a rung; None: never shared (FLAC)."""
    if rendition.codec.lossless:
        return None
    return (
        rendition.codec,
        rendition.codecs,
        rendition.sample_rate_hz,
        rendition.channels,
        rendition.timescale,
        rendition.layout,
        rendition.decoder_config,
        rendition.encoder_delay_ticks,
        rendition.duration_ticks,
        tuple((s.start_ticks, s.duration_ticks) for s in rendition.segments),
        # The init declares the key id (cbcs `tenc`), and an AES-128 group playlist names
        # one key: rungs with different keys never share (ISO/IEC 23001-7 8.1; RFC 8216 4.3.2.4).
        rendition.encryption,
    )


def can_share(renditions: Sequence[Rendition]) -> bool:
    """Whether one init segment and one segment timeline serve all of ``renditions``:
    the test :func:`derive_groups` groups by."""
    if len(renditions) < 2:
        return True
    keys = [_decoder_key(r) for r in renditions]
    return keys[0] is not None and all(k == keys[0] for k in keys)


def derive_groups(renditions: Sequence[Rendition]) -> tuple[SwitchGroup, ...]:
    """The switching groups of ``renditions`` (in ladder order): every rendition
    in exactly one group; see the module docstring for the rule and the names."""
    members: dict[object, list[int]] = {}
    for index, rendition in enumerate(renditions):
        key = _decoder_key(rendition)
        members.setdefault(index if key is None else key, []).append(index)
    codec_order: dict[Codec, int] = {}
    for rendition in renditions:
        codec_order.setdefault(rendition.codec, len(codec_order))
    ranked = sorted(
        members.values(),
        key=lambda m: (codec_order[renditions[m[0]].codec], -len(m), m[0]),
    )
    groups: list[SwitchGroup] = []
    named: dict[Codec, int] = {}
    for indices in ranked:
        first = renditions[indices[0]]
        count = named[first.codec] = named.get(first.codec, 0) + 1
        ordered = sorted(indices, key=lambda i: (nominal_bitrate_bps(renditions[i]), i))
        top = renditions[ordered[-1]]
        groups.append(
            SwitchGroup(
                id=first.codec.value if count == 1 else f"{first.codec.value}-{count}",
                codec=first.codec,
                codecs=first.codecs,
                sample_rate_hz=first.sample_rate_hz,
                channels=first.channels,
                audio_object_type=audio_object_type(first.codecs),
                rendition_ids=tuple(renditions[i].id for i in ordered),
                init_uri=f"{top.id}/{top.init_name}",
            )
        )
    return tuple(groups)


def settle_groups(
    renditions: Sequence[Rendition], groups: tuple[SwitchGroup, ...]
) -> tuple[SwitchGroup, ...]:
    """The groups a presentation of ``renditions`` holds: ``groups`` without the
    renditions that are not there (a filtered or capped presentation), or, when
    none are given, :func:`derive_groups`.  A restricted group keeps its init
    segment, which serves its remaining rungs as well as it served them all."""
    if not groups:
        return derive_groups(renditions)
    present = {r.id for r in renditions}
    kept: list[SwitchGroup] = []
    for group in groups:
        ids = tuple(i for i in group.rendition_ids if i in present)
        if ids == group.rendition_ids:
            kept.append(group)
        elif ids:
            kept.append(dataclasses.replace(group, rendition_ids=ids))
    return tuple(kept) if kept or not renditions else derive_groups(renditions)
