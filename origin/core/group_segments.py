"""What a decided segment's path names in one model, found once per model and kept per
app (``keys.GROUP_SEGMENTS``): the group, the top rung's segment, each rung's file name,
redirect target and size for it, and the controller's per-track inputs (the ladder, the
segment duration), so that a decided request neither looks them up nor computes them
again."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from cadenza.manifests.groups import SwitchGroup
from cadenza.manifests.model import Presentation, Segment

# Found group segments kept; past this the table starts afresh (a repackaged track is
# a new model, so entries of old models would otherwise pile up).
GROUP_SEGMENTS_KEPT: Final = 4096


@dataclass(frozen=True, slots=True)
class GroupSegment:
    presentation: Presentation  # held, so that its id (the key) is not reused
    group: SwitchGroup
    segment: Segment
    names: Mapping[str, str]  # rung id -> file name
    # rung id -> the rung's own segment URL relative to the group's
    # (``../aac-128k/seg-00007.m4s``), or None where that would name a group folder.
    locations: Mapping[str, str | None]
    sizes_bytes: Mapping[str, int]  # rung id -> its segment's size (the origin's timing)
    ladder_bps: tuple[int, ...]  # the group's rungs' bitrates, ascending
    segment_duration_s: float  # the track's nominal segment duration


class GroupSegments:
    """Found group segments per (model, group, file name), the model checked by
    identity."""

    def __init__(self, kept: int = GROUP_SEGMENTS_KEPT) -> None:
        self._kept = kept
        self._found: dict[tuple[int, str, str], GroupSegment] = {}

    def get(self, presentation: Presentation, group_id: str, name: str) -> GroupSegment | None:
        found = self._found.get((id(presentation), group_id, name))
        return found if found is not None and found.presentation is presentation else None

    def put(self, name: str, found: GroupSegment) -> None:
        if len(self._found) >= self._kept:
            self._found.clear()
        self._found[(id(found.presentation), found.group.id, name)] = found
