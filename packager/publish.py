"""Finish a packaged track in its working folder: give the rungs of each switching
group one init segment, then write the manifests in the order that keeps an
interrupted track recognisably incomplete.

Shared by ``cadenza package`` (:mod:`cadenza.packager.track`) and ``cadenza segment``
(:mod:`cadenza.packager.remux`); it imports no codec library.
"""

from __future__ import annotations

from collections.abc import Iterator
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
    SwitchGroup,
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
        bitrates = group_bitrates(presentation, group)
        if bitrates is None:
            continue
        peak_bps, average_bps = bitrates
        for rendition_id in group.rendition_ids:
            rendition = presentation.rendition(rendition_id)
            if (
                rendition.encryption is not None
                and rendition.encryption.scheme is EncryptionScheme.AES_128
            ):
                continue  # encrypted whole (RFC 8216 AES-128): its bytes cannot be patched
            with open(work_dir / rendition.id / rendition.init_name, "r+b") as handle:
                init = handle.read(rendition.init_size_bytes)
                handle.seek(0)
                handle.write(with_group_bitrates(init, peak_bps, average_bps))


def group_bitrates(presentation: Presentation, group: SwitchGroup) -> tuple[int, int] | None:
    """(peak, average) bit/s the shared init segment of a switching group carries: the
    highest of its rungs' (:func:`cadenza.packager.mp4.with_group_bitrates`); None for a
    group of one, whose init segment is its rung's own."""
    if not group.switchable:
        return None
    members = [presentation.rendition(i) for i in group.rendition_ids]
    return max(r.peak_bitrate_bps for r in members), max(r.average_bitrate_bps for r in members)


def render_manifests(presentation: Presentation) -> list[tuple[str, str | Iterator[str]]]:
    """Every manifest of a track as ``(path relative to the track folder, text)``, in the
    order they are written: media playlists, then the MPD and master playlist, then
    ``presentation.json`` last (as pieces, so a long one need never be whole in memory).
    The one rendering both the packager (:func:`write_manifests`) and just-in-time
    packaging (:func:`cadenza.packager.jit.plan.track_files`) use."""
    files: list[tuple[str, str | Iterator[str]]] = [
        (f"{r.id}/{r.playlist_name}", render_media_playlist(r)) for r in presentation.renditions
    ]
    files.append((MPD_NAME, render_mpd(presentation)))
    files.append((MASTER_NAME, render_master(presentation)))
    files.append((PRESENTATION_NAME, presentation_json_pieces(presentation)))
    return files


def write_manifests(work_dir: Path, presentation: Presentation) -> None:
    """Media playlists, then the MPD and master playlist, then presentation.json last."""
    for name, text in render_manifests(presentation):
        write_text_atomic(work_dir / name, text)
