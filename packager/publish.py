"""Write a packaged track's manifests into its working folder, in the order
that keeps an interrupted track recognisably incomplete.

Shared by ``cadenza package`` (:mod:`packager.track`) and ``cadenza segment``
(:mod:`packager.remux`); it imports no codec library.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from manifests.dash import render_mpd
from manifests.hls import render_master, render_media_playlist
from manifests.jsonio import presentation_to_dict, presentation_to_json
from manifests.model import MASTER_NAME, MPD_NAME, PLAYLIST_NAME, PRESENTATION_NAME, Presentation
from packager.output import write_text_atomic

# As manifests.jsonio.presentation_to_json encodes: two-space indent, sorted keys.
_ENCODER: Final = json.JSONEncoder(indent=2, sort_keys=True, allow_nan=False)
_RENDITIONS: Final = '\n  "renditions": []'  # the top-level key, in a document without any
_ITEM_INDENT: Final = "\n    "  # a rendition's lines sit two levels deep


def presentation_json(presentation: Presentation) -> Iterator[str]:
    """``presentation.json`` in pieces, byte for byte as
    :func:`manifests.jsonio.presentation_to_json` renders it, one rendition at a time.

    Rendering the whole document at once holds a dict per segment of every rendition
    and, because an indented ``json.dumps`` collects its output as a list of small
    strings before joining it, some ten strings per segment: 21 MiB for a 3-hour
    track's seven renditions, when its text is 2.7 MB.
    """
    head = _ENCODER.encode(presentation_to_dict(dataclasses.replace(presentation, renditions=())))
    before, found, after = head.partition(_RENDITIONS)
    if not presentation.renditions or not found:
        yield presentation_to_json(presentation)
        return
    yield before + _RENDITIONS[:-1]
    for index, rendition in enumerate(presentation.renditions):
        single = dataclasses.replace(presentation, renditions=(rendition,))
        documents = presentation_to_dict(single)["renditions"]
        assert isinstance(documents, list) and len(documents) == 1
        yield ("," if index else "") + _ITEM_INDENT
        # JSON strings escape their newlines: every newline here is the encoder's indent.
        for piece in _ENCODER.iterencode(documents[0]):
            yield piece.replace("\n", _ITEM_INDENT)
    yield "\n  ]" + after + "\n"


def write_manifests(work_dir: Path, presentation: Presentation) -> None:
    """Media playlists, then the MPD and master playlist, then presentation.json last."""
    for rendition in presentation.renditions:
        write_text_atomic(work_dir / rendition.id / PLAYLIST_NAME, render_media_playlist(rendition))
    write_text_atomic(work_dir / MPD_NAME, render_mpd(presentation))
    write_text_atomic(work_dir / MASTER_NAME, render_master(presentation))
    write_text_atomic(work_dir / PRESENTATION_NAME, presentation_json(presentation))
