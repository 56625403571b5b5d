"""Origin-decided ABR (``?abr=origin``) in the answer core, one implementation
for both transports (see ``docs/players.md``, "Origin-decided ABR"):

- ``<track>/master.m3u8?abr=origin`` and ``<track>/manifest.mpd?abr=origin``:
  one variant (AdaptationSet) per switching group of two rungs or more,
  rendered from the presentation as packaged (filtered by ``codec``,
  ``min_bitrate``, ``max_bitrate``; never capped by guidance, which could
  leave a group one rung), the session's ``sid`` on every group URI: the one
  the request names (``sid`` or CMCD ``sid``), else a new one;
- ``<track>/group-<id>/playlist.m3u8``: the group's media playlist;
- ``<track>/group-<id>/seg-NNNNN.m4s``: a decision
  (:func:`cadenza.origin.deciding.decide_segment`), answered ``302`` to the
  chosen rung's own segment, or with its bytes: always (``abr_delivery =
  direct``), or per request (``adaptive``, :mod:`cadenza.abr.delivery`).

Every answer here is the session's: ``private``.  A track with no group to
decide raises ``NotSwitchableError`` (409); an unknown group or segment 404."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from cadenza.abr.cmcd import parse_request_cmcd
from cadenza.abr.delivery import Delivery
from cadenza.manifests.dash import render_group_mpd
from cadenza.manifests.errors import NotSwitchableError
from cadenza.manifests.groups import SwitchGroup, group_id_of_folder
from cadenza.manifests.hls import render_group_master, render_group_playlist
from cadenza.manifests.model import MASTER_NAME, PLAYLIST_NAME, Presentation, Segment
from cadenza.origin.cache import build_cached
from cadenza.origin.core.group_segments import GroupSegment
from cadenza.origin.core.heads import ObjectChoice, Redirect
from cadenza.origin.core.request import MediaRequest
from cadenza.origin.deciding import (
    assign_sid,
    decide_segment,
    group_ladder_bps,
    prepare_decisions,
    rung_segment_bytes,
    segment_numbered,
    session_of,
)
from cadenza.origin.errors import ObjectNotFoundError, ObjectTooLargeError, OriginError
from cadenza.origin.keys import GROUP_SEGMENTS, METRICS, SETTINGS
from cadenza.origin.objects import load_object
from cadenza.origin.rendering import filter_values, nominal_segment_s, presentation_of, select
from cadenza.origin.storage import ObjectInfo, StoredObject
from cadenza.origin.telemetry import observe

ABR_QUERY: Final = "abr"
ABR_ORIGIN: Final = "origin"
# seg-00001.m4s, or with a republished track's version tag: seg-00001-3f9a0c1d.m4s.
_SEGMENT_RE: Final = re.compile(r"seg-([0-9]{1,9})(?:-[0-9A-Za-z]{1,32})?\.m4s")


@dataclass(frozen=True, slots=True)
class GroupTarget:
    """A path below a group folder: ``<track>/group-<group_id>/<name>``."""

    track: str
    group_id: str
    name: str


# Keys read lately (every decided segment names its key again; a key's reading
# never changes); the table starts afresh when full.
_TARGETS_KEPT: Final = 4096
_TARGET_MAX_CHARS: Final = 256
_targets: dict[str, GroupTarget | None] = {}


def group_target(key: str) -> GroupTarget | None:
    """The group path a storage key names, or None (no group folder is a file)."""
    if key in _targets:
        return _targets[key]
    target = _group_target(key)
    if len(key) <= _TARGET_MAX_CHARS:
        if len(_targets) >= _TARGETS_KEPT:
            _targets.clear()
        _targets[key] = target
    return target


def _group_target(key: str) -> GroupTarget | None:
    parts = key.split("/")
    if len(parts) != 3 or not parts[0] or not parts[2]:
        return None
    group_id = group_id_of_folder(parts[1])
    return None if group_id is None else GroupTarget(parts[0], group_id, parts[2])


def asks_origin_abr(asked: MediaRequest) -> bool:
    """A track manifest asked with ``?abr=origin``."""
    query = asked.query
    return query is not None and query.get(ABR_QUERY) == ABR_ORIGIN


class RedirectTargetError(OriginError):
    """A decision that would redirect to a group URL (a loop): a bug, never sent."""

    def __init__(self, location: str) -> None:
        self.location = location
        super().__init__(f"refusing to redirect a group segment to {location!r}")


def _switchable_group(presentation: Presentation, group_id: str) -> SwitchGroup:
    try:
        group = presentation.group(group_id)
    except KeyError:
        raise ObjectNotFoundError(f"no switching group {group_id[:64]!r}") from None
    if group not in presentation.switchable_groups():  # raises for single-file too
        raise NotSwitchableError(
            presentation.track_id,
            f"group {group_id} has one rendition",
            tuple(g.id for g in presentation.groups),
        )
    return group


def _segment(presentation: Presentation, group: SwitchGroup, name: str) -> Segment:
    match = _SEGMENT_RE.fullmatch(name)
    top = presentation.rendition(group.rendition_ids[-1])
    segment = None if match is None else segment_numbered(top, int(match.group(1)))
    if segment is not None and top.segment_name(segment) == name:
        return segment
    raise ObjectNotFoundError(f"group {group.id} has no segment {name[:64]!r}")


def _group_segment(
    app: web.Application, presentation: Presentation, target: GroupTarget
) -> GroupSegment:
    """The group and segment ``target`` names (raising as :func:`_switchable_group`
    and :func:`_segment` do), remembered for ``presentation``."""
    kept = app[GROUP_SEGMENTS]
    found = kept.get(presentation, target.group_id, target.name)
    if found is not None:
        return found
    group = _switchable_group(presentation, target.group_id)
    segment = _segment(presentation, group, target.name)
    rungs = group.rendition_ids
    names = {i: presentation.rendition(i).segment_name(segment) for i in rungs}
    found = GroupSegment(
        presentation,
        group,
        segment,
        names,
        # ../group-x/...: the player would loop (RedirectTargetError when chosen).
        locations={
            i: None if group_id_of_folder(i) is not None else f"../{i}/{names[i]}" for i in rungs
        },
        sizes_bytes={i: rung_segment_bytes(presentation, i, segment) for i in rungs},
        ladder_bps=group_ladder_bps(presentation, group),
        segment_duration_s=nominal_segment_s(presentation),
    )
    kept.put(target.name, found)
    return found


def _private(
    key: str, text: str, mtime_s: float, max_age_s: int, *, vary_session: bool
) -> ObjectChoice:
    body = text.encode("utf-8")
    info = ObjectInfo(len(body), mtime_s, "")
    control = f"private, max-age={max_age_s}"
    obj = build_cached(key, StoredObject(info, body), control)
    # A session named by the CMCD-Session header: the URL alone does not name the answer.
    vary = "Accept-Encoding, CMCD-Session" if vary_session else None
    # ``control`` given, the answer is a session's: the fast transport keeps no head of it.
    return ObjectChoice(obj, "decided", control=control, vary=vary)


async def _session_id(app: web.Application, track: str, asked: MediaRequest) -> tuple[str, bool]:
    """The session a manifest request names (its CMCD folded in), else a new one;
    and whether the ``CMCD-Session`` header named it."""
    query = asked.query or {}
    observed = await observe(
        app,
        track,
        cmcd_query=query.get("CMCD"),
        sid_query=query.get("sid"),
        headers=asked.headers,
        remote=asked.remote,
    )
    if observed is not None:
        return observed.sid, observed.sid_from_header
    cmcd = parse_request_cmcd(query.get("CMCD"), asked.headers)
    return session_of(query, cmcd) or assign_sid(), False


async def choose_decided_manifest(app: web.Application, asked: MediaRequest) -> ObjectChoice:
    """``master.m3u8?abr=origin`` or ``manifest.mpd?abr=origin``."""
    track, _, name = asked.key.partition("/")
    presentation, source = await presentation_of(app, track)
    shaped = select(presentation, filter_values(asked.query or {}))
    shaped.switchable_groups()  # raises NotSwitchableError before the session is touched
    await prepare_decisions(presentation)
    sid, from_header = await _session_id(app, track, asked)
    render = render_group_master if name == MASTER_NAME else render_group_mpd
    text = render(shaped, session_id=sid)
    max_age_s = app[SETTINGS].manifest_max_age_s
    return _private(asked.key, text, source.mtime_s, max_age_s, vary_session=from_header)


async def choose_group_object(
    app: web.Application, asked: MediaRequest, target: GroupTarget
) -> ObjectChoice | Redirect:
    """A group's media playlist, or a decided segment of it."""
    presentation, source = await presentation_of(app, target.track)
    settings = app[SETTINGS]
    if target.name == PLAYLIST_NAME:
        group = _switchable_group(presentation, target.group_id)
        sid, from_header = await _session_id(app, target.track, asked)
        text = render_group_playlist(presentation, group.id, session_id=sid)
        max_age_s = settings.manifest_max_age_s
        return _private(asked.key, text, source.mtime_s, max_age_s, vary_session=from_header)
    found = _group_segment(app, presentation, target)
    decided = await decide_segment(
        app,
        track=target.track,
        found=found,
        query=asked.query or {},
        headers=asked.headers,
        remote=asked.remote,
        connection=asked.connection,
        mode=settings.abr_delivery,
        object_name=target.name,
    )
    rung_id = decided.rung
    name = found.names[rung_id]
    location = found.locations[rung_id]
    if location is None:
        raise RedirectTargetError(f"../{rung_id}/{name}")
    metrics = app[METRICS]
    if decided.delivery is Delivery.DIRECT:
        try:
            obj, how = await load_object(app, f"{target.track}/{rung_id}/{name}")
        except ObjectTooLargeError:  # not held in memory: the rung's own URL streams it
            metrics.delivered(Delivery.REDIRECT)
            return Redirect(location)
        metrics.delivered(Delivery.DIRECT)
        return ObjectChoice(obj, how, control="private")
    metrics.delivered(Delivery.REDIRECT)
    return Redirect(location)
