"""The one decision of which object answers a media request, for both
transports: the file itself, a manifest rendered (filtered by the query,
steered for a session, naming content-steering pathways), or the file with a
session's CMSD (CTA-5006).  The transports then plan the status
(``core.validators.plan_object_answer``) and the head
(``core.heads.object_fields``) from the same functions."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from cadenza.abr.cmcd import HEADER_NAMES as CMCD_HEADER_NAMES
from cadenza.manifests.encryption import clearkey_licence_url, has_cbcs
from cadenza.manifests.model import MPD_NAME, Presentation
from cadenza.manifests.steering import SteeringConfig
from cadenza.origin.cache import CachedObject
from cadenza.origin.core.decided import (
    asks_origin_abr,
    choose_decided_manifest,
    choose_group_object,
    group_target,
)
from cadenza.origin.core.heads import ObjectChoice, Redirect
from cadenza.origin.core.request import MediaRequest
from cadenza.origin.core.routes import RouteClass, is_track_manifest
from cadenza.origin.errors import ObjectNotFoundError, StorageUnavailableError
from cadenza.origin.keys import CLOCK, SETTINGS
from cadenza.origin.live.cmsd import live_cmsd_for
from cadenza.origin.live.errors import LiveTrackError
from cadenza.origin.live.keys import has_live_state, is_live_track
from cadenza.origin.objects import load_object
from cadenza.origin.prefetch.hooks import note_media_request, preload_hint, settle_loaded
from cadenza.origin.rendering import (
    cmsd_for,
    filter_values,
    guided_segment,
    nominal_segment_s,
    presentation_of,
    private_control,
    render_manifest,
)
from cadenza.origin.telemetry import Observed, Then, media_timing, observe


def has_cmcd_headers(asked: MediaRequest) -> bool:
    return any(name in asked.headers for name in CMCD_HEADER_NAMES)


def names_a_session(asked: MediaRequest) -> bool:
    """Whether the request may name a session: a ``CMCD`` or ``sid`` argument,
    or a ``CMCD-*`` header (CTA-5004)."""
    query = asked.query or {}
    return "CMCD" in query or "sid" in query or has_cmcd_headers(asked)


async def choose_object(
    app: web.Application,
    asked: MediaRequest,
    *,
    steering: SteeringConfig | None = None,
    personal_pathways: bool = False,
    fold_on_failure: bool = True,
    root_url: Callable[[], str] | None = None,
) -> ObjectChoice | Redirect:
    """The object that answers ``asked``, and a session's changes to its head.

    Whatever can fail (the loads, a filter that is invalid or matches nothing)
    is done before the session is touched, so a request that fails is never
    folded into its session before it fails; then, with ``fold_on_failure``,
    it is folded in (the player did ask for it) and the error raised.  The
    fast transport passes False: it hands a failed request to aiohttp, which
    folds it in, once.  ``steering``: the track's content-steering block, when
    pathways are configured (its manifests are always rendered);
    ``personal_pathways``: that block is this viewer's.  Raises the storage's
    and the filter's errors, and ``ObjectTooLargeError``.

    The MPD of a track with ``cbcs`` renditions is always rendered, with this
    viewer's ClearKey licence URL below the URL ``root_url()`` builds (the
    origin's root as the viewer reached it: scheme, host, and the MPD's
    ``/t/<token>`` prefix; ``origin.licences.viewer_root_url``; called only
    then, so a clear track's MPD never depends on the Host), and answered
    private.  Without
    ``root_url`` (the fast transport, which reads no Host) that raises
    :class:`ViewerManifestError` before anything is touched, and the transport
    hands the request to aiohttp; the stored MPD is never loaded for such a
    track, so no hot copy without the URL can be served.

    Origin-decided playback (``?abr=origin`` manifests, ``group-<id>/`` paths)
    is :mod:`.decided`'s: a decided segment is a :class:`Redirect`."""
    settings = app[SETTINGS]
    key = asked.key
    target = group_target(key)
    if target is not None:
        return await choose_group_object(app, asked, target)
    manifest = is_track_manifest(key)
    if manifest and asks_origin_abr(asked):
        return await choose_decided_manifest(app, asked)
    track = key.partition("/")[0]
    if asked.route == RouteClass.MANIFEST and await is_live_track(app, key):
        raise LiveTrackError(key)  # rendered per request (origin.live), never the stored file
    query = asked.query or {}
    selected = filter_values(query) if manifest else ()
    session = names_a_session(asked)
    # A known session gets a steered manifest, or CMSD on a media segment.
    guided = session and settings.guidance and (manifest or guided_segment(key))
    rendered_always = manifest and (bool(selected) or steering is not None)
    model = None
    loaded = None
    rendered = None
    licence_url = None
    try:
        if manifest and key.partition("/")[2] == MPD_NAME:
            model = await _protected_model(app, track)
            if model is not None:
                if root_url is None:
                    raise ViewerManifestError(key)
                licence_url = clearkey_licence_url(root_url())
                rendered_always = True
        if (rendered_always or guided) and model is None:
            try:
                model = await presentation_of(app, track)
            except ObjectNotFoundError:
                # A live track's media has no VOD model: no CMSD, its CMCD still folded in.
                if manifest or not await has_live_state(app, track):
                    raise
        if rendered_always:  # rendered whether or not a session steers it: checks the filter
            rendered = await render_manifest(
                app,
                key,
                selected,
                None,
                steering,
                personal_pathways=personal_pathways,
                model=model,
                licence_url=licence_url,
            )
        # A steered manifest is rendered instead of the file: load the file
        # later, if at all, unless CMCD is folded in first.
        folds = "CMCD" in query or has_cmcd_headers(asked)
        if rendered is None and (not manifest or not guided or folds):
            loaded = await load_object(app, key)
    except Exception:
        if session and fold_on_failure:
            await _observe(app, track, asked)
        raise
    then = None
    if guided and not manifest and loaded is not None and model is not None:
        # The origin serves this segment itself: its own timing of the session.
        duration_s = nominal_segment_s(model[0])
        body_bytes = len(loaded[0].body)
        then = media_timing(app[CLOCK](), body_bytes, duration_s, asked.connection, asked.remote)
    observed = await _observe(app, track, asked, then) if session else None
    if observed is not None and settings.guidance and manifest:
        rendered = await render_manifest(
            app,
            key,
            selected,
            observed,
            steering,
            personal_pathways=personal_pathways,
            model=model,
            licence_url=licence_url,
        )
    if rendered is not None:
        vary = "Accept-Encoding, CMCD-Session" if rendered.vary_session else None
        return ObjectChoice(rendered.obj, rendered.how, vary=vary)
    if loaded is None:  # only a sid, that names no session: nothing folded in
        loaded = await load_object(app, key)
    obj, how = loaded
    prefetched = settle_loaded(app, key, how)
    link = None
    if observed is not None and not manifest:  # prefetch learns from it (no I/O here)
        note_media_request(app, asked, observed)
        link = preload_hint(app, key, observed.sid)
    # A session's hint makes the answer the session's (never a shared cache's).
    control = None if link is None else private_control(obj.cache_control)
    if observed is None or not settings.guidance or not guided_segment(key):
        return ObjectChoice(obj, how, control=control, link=link, prefetched=prefetched)
    if model is None:  # a live track's media: CMSD from the live model
        cmsd = await live_cmsd_for(app, key, observed)
    else:
        cmsd = await cmsd_for(app, key, observed, model)
    if cmsd is None:
        return ObjectChoice(obj, how, control=control, link=link, prefetched=prefetched)
    # A 304 keeps the shared head (core.heads.object_fields).
    control = private_control(obj.cache_control)
    return ObjectChoice(obj, how, control=control, cmsd=cmsd, link=link, prefetched=prefetched)


class ViewerManifestError(Exception):
    """The MPD at ``key`` names this viewer's licence URL, which only a transport
    that reads the request's Host and forwarding fields can build: the fast
    transport hands it to aiohttp."""

    def __init__(self, key: str) -> None:
        super().__init__(f"{key}: rendered per viewer (its licence URL)")
        self.key = key


async def _protected_model(
    app: web.Application, track: str
) -> tuple[Presentation, CachedObject] | None:
    """The track's model when its MPD carries ``ContentProtection`` (a ``cbcs``
    rendition), else None.  A track without a model, or with a damaged one, has
    its MPD served as stored, as before encryption existed (it then names no
    licence URL); a storage outage is raised (the stored MPD would not load
    either)."""
    try:
        model = await presentation_of(app, track)
    except ObjectNotFoundError:
        return None
    except StorageUnavailableError as exc:
        if exc.backend != "data":
            raise
        return None
    return model if has_cbcs(model[0].renditions) else None


async def _observe(
    app: web.Application,
    track: str,
    asked: MediaRequest,
    then: Then | None = None,
) -> Observed | None:
    query = asked.query or {}
    return await observe(
        app,
        track,
        cmcd_query=query.get("CMCD"),
        sid_query=query.get("sid"),
        headers=asked.headers,
        remote=asked.remote,
        then=then,
        object_name=asked.key.rpartition("/")[2],
    )
