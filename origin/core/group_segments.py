"""What a decided segment's path names in one model, found once per model and kept per
app (``keys.GROUP_SEGMENTS``): the group, the top rung's segment, and each rung's file
name for it, so that a decided request does not look them up again."""

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
