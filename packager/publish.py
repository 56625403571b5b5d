"""Finish a packaged track in its working folder: give the rungs of each switching
group one init segment, then write the manifests in the order that keeps an
interrupted track recognisably incomplete.

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
    PRESENTATION_NAME,
    EncryptionScheme,
    Presentation,
)
from cadenza.packager.mp4 import with_group_bitrates
from cadenza.packager.output import write_text_atomic


def share_group_inits(work_dir: Path, presentation: Presentation) -> None:
    """Make the init segments of every switching group of two rungs or more
    byte-identical, so that any of them serves every rung of the group.

    The rungs of a group already share everything their init segments hold but
    the bitrate fields of the sample entry; those are rewritten in place for the
    group (:func:`cadenza.packager.mp4.with_group_bitrates`), at the same length,
    so the sizes and byte ranges the presentation records stay right.  In the
    single-file layout the init segment is the start of ``media.mp4``.
    """
    for group in presentation.groups:
        if not group.switchable:
            continue
        members = [presentation.rendition(i) for i in group.rendition_ids]
        peak_bps = max(r.peak_bitrate_bps for r in members)
        average_bps = max(r.average_bitrate_bps for r in members)
        for rendition in members:
            if (
                rendition.encryption is not None
                and rendition.encryption.scheme is EncryptionScheme.AES_128
            ):
                continue  # encrypted whole (RFC 8216 AES-128): its bytes cannot be patched
            with open(work_dir / rendition.id / rendition.init_name, "r+b") as handle:
                init = handle.read(rendition.init_size_bytes)
                handle.seek(0)
                handle.write(with_group_bitrates(init, peak_bps, average_bps))


def write_manifests(work_dir: Path, presentation: Presentation) -> None:
    """Media playlists, then the MPD and master playlist, then presentation.json last."""
    for rendition in presentation.renditions:
        playlist = work_dir / rendition.id / rendition.playlist_name
        write_text_atomic(playlist, render_media_playlist(rendition))
    write_text_atomic(work_dir / MPD_NAME, render_mpd(presentation))
    write_text_atomic(work_dir / MASTER_NAME, render_master(presentation))
    write_text_atomic(work_dir / PRESENTATION_NAME, presentation_json_pieces(presentation))
