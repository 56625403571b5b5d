"""Write a packaged track's manifests into its working folder, in the order
that keeps an interrupted track recognisably incomplete.

Shared by ``cadenza package`` (:mod:`cadenza.packager.track`) and ``cadenza segment``
(:mod:`cadenza.packager.remux`); it imports no codec library.
"""

from __future__ import annotations

from pathlib import Path

from cadenza.manifests.dash import render_mpd
from cadenza.manifests.hls import render_master, render_media_playlist
from cadenza.manifests.jsonio import presentation_json_pieces
from cadenza.manifests.model import (
    MASTER_NAME,
    MPD_NAME,
    PLAYLIST_NAME,
    PRESENTATION_NAME,
    Presentation,
)
from cadenza.packager.output import write_text_atomic


def write_manifests(work_dir: Path, presentation: Presentation) -> None:
    """Media playlists, then the MPD and master playlist, then presentation.json last."""
    for rendition in presentation.renditions:
        write_text_atomic(work_dir / rendition.id / PLAYLIST_NAME, render_media_playlist(rendition))
    write_text_atomic(work_dir / MPD_NAME, render_mpd(presentation))
    write_text_atomic(work_dir / MASTER_NAME, render_master(presentation))
    write_text_atomic(work_dir / PRESENTATION_NAME, presentation_json_pieces(presentation))
