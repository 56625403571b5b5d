"""The packager writes ``presentation.json`` from pieces (see
``tests/manifests/test_jsonio_pieces.py``): the file is the whole document."""

from __future__ import annotations

from pathlib import Path

from cadenza.manifests.jsonio import presentation_to_json
from cadenza.manifests.model import PRESENTATION_NAME, SegmentLayout
from cadenza.packager.publish import write_manifests
from tests.manifests.test_rendering import make_presentation


def test_write_manifests_writes_that_presentation_json(tmp_path: Path) -> None:
    presentation = make_presentation(SegmentLayout.SINGLE)
    for rendition in presentation.renditions:
        (tmp_path / rendition.id).mkdir()
    write_manifests(tmp_path, presentation)
    written = (tmp_path / PRESENTATION_NAME).read_text(encoding="utf-8")
    assert written == presentation_to_json(presentation)
    assert not list(tmp_path.glob(".*.tmp"))
