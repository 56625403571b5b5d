"""``presentation.json`` as the packager writes it, one rendition at a time, is
byte for byte what :func:`manifests.jsonio.presentation_to_json` renders."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from manifests.jsonio import presentation_to_json
from manifests.model import PRESENTATION_NAME, Presentation, SegmentLayout
from packager.publish import presentation_json, write_manifests
from tests.manifests.test_rendering import make_presentation


def _cases() -> list[Presentation]:
    separate = make_presentation()
    return [
        separate,
        make_presentation(SegmentLayout.SINGLE),
        make_presentation(loudness=False, channels=6),
        dataclasses.replace(separate, renditions=separate.renditions[:1], source=None),
        # Strings that look like the document's own structure stay inside their quotes.
        dataclasses.replace(
            separate,
            track_id='a\n  "renditions": [],\nb',
            metadata=(("title", '"renditions": []'), ("comment", "line one\nline two")),
        ),
    ]


@pytest.mark.parametrize("presentation", _cases())
def test_presentation_json_matches_the_manifests_rendering(presentation: Presentation) -> None:
    assert "".join(presentation_json(presentation)) == presentation_to_json(presentation)


def test_write_manifests_writes_that_presentation_json(tmp_path: Path) -> None:
    presentation = make_presentation(SegmentLayout.SINGLE)
    for rendition in presentation.renditions:
        (tmp_path / rendition.id).mkdir()
    write_manifests(tmp_path, presentation)
    written = (tmp_path / PRESENTATION_NAME).read_text(encoding="utf-8")
    assert written == presentation_to_json(presentation)
    assert not list(tmp_path.glob(".*.tmp"))
