"""The tags of an input, as PyAV reads them, cleaned into the presentation's metadata.

FFmpeg puts a file's tags on the container (FLAC's Vorbis comments, ID3, MP4
``ilst``) or on the stream (Ogg), so both are read: the container's first, then
the audio stream's.  :func:`cadenza.manifests.metadata.clean_metadata` decides what is
kept and how it is cleaned.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from av.audio.stream import AudioStream
from av.container import InputContainer

from cadenza.manifests.metadata import clean_metadata


def _pairs(tags: Mapping[str, str] | None) -> Iterator[tuple[str, str]]:
    for name, value in (tags or {}).items():
        if isinstance(name, str) and isinstance(value, str):
            yield name, value


def read_tags(container: InputContainer, stream: AudioStream) -> tuple[tuple[str, str], ...]:
    """The cleaned ``(key, value)`` metadata of one input (see
    :mod:`cadenza.manifests.metadata`); empty when the file carries no known tag."""
    return clean_metadata([*_pairs(container.metadata), *_pairs(stream.metadata)])
