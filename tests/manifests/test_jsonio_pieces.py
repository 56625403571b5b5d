"""``presentation.json`` in pieces, one rendition at a time (what the packager
writes, so a 3-hour track's document is never whole in memory), is byte for
byte what :func:`cadenza.manifests.jsonio.presentation_to_json` renders."""

from __future__ import annotations

import dataclasses

import pytest

from cadenza.manifests.jsonio import presentation_json_pieces, presentation_to_json
from cadenza.manifests.model import Presentation, SegmentLayout
from tests.manifests.test_rendering import make_presentation


def _cases() -> list[Presentation]:
    separate = make_presentation()
    return [
        separate,
        make_presentation(SegmentLayout.SINGLE),
        make_presentation(loudness=False, channels=6),
        dataclasses.replace(separate, renditions=separate.renditions[:1], source=None),
        dataclasses.replace(separate, renditions=()),
        # Strings that look like the document's own structure stay inside their quotes.
        dataclasses.replace(
            separate,
            track_id='a\n  "renditions": [],\nb',
            metadata=(("title", '"renditions": []'), ("comment", "line one\nline two")),
        ),
    ]


@pytest.mark.parametrize("presentation", _cases())
def test_pieces_join_to_the_whole_document(presentation: Presentation) -> None:
    assert "".join(presentation_json_pieces(presentation)) == presentation_to_json(presentation)
