"""What a complete track is, once for every backend and both sides.

A track is complete when its ``presentation.json`` exists and parses.  Writers put
that file last (the local folder is renamed into place whole with it inside; an S3
upload deletes it first and uploads it after everything else), so its presence says
every file it names is there.  The packager's skip logic, its S3 rerun check and the
origin's listing (``/v1/tracks``) all ask this one function.
"""

from __future__ import annotations

from typing import Final

from cadenza.manifests.errors import ManifestError
from cadenza.manifests.jsonio import presentation_from_json
from cadenza.manifests.model import PRESENTATION_NAME

HIDDEN_PREFIX: Final = "."  # working folders, the batch report's folder: never a track


def is_complete(presentation_json: bytes | None) -> bool:
    """Whether a track whose ``presentation.json`` holds these bytes (None: there is
    no such file) is complete."""
    if presentation_json is None:
        return False
    try:
        presentation_from_json(presentation_json)
    except ManifestError:
        return False
    return True


def presentation_key(track_id: str) -> str:
    """The key, relative to a store's root, of a track's completion marker."""
    return f"{track_id}/{PRESENTATION_NAME}"


def is_track_name(name: str) -> bool:
    """Whether a top-level folder name can be a track (hidden folders never are)."""
    return bool(name) and not name.startswith(HIDDEN_PREFIX) and "/" not in name
