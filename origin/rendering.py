"""Master playlists and MPDs rendered from a track's model: filtered by a
query, steered for a session, cached per shape; and the CMSD of a session's
segments (CTA-5006).  No request object: the fast transport renders with it
too."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from cadenza.abr.guidance import (
    SERVER_ID,
    bitrate_hint,
    cmsd_dynamic,
    cmsd_static,
    guide_presentation,
    segment_duration_ms,
)
from cadenza.abr.policy import Guidance
from cadenza.abr.session import SessionState
from cadenza.manifests.channels import CHANNELS_QUERY, keep_channels, parse_channels
from cadenza.manifests.dash import render_mpd
from cadenza.manifests.encryption import has_cbcs
from cadenza.manifests.errors import InvalidPresentationError
from cadenza.manifests.errors import NoMatchingRenditionsError as NoRenditionsInModel
from cadenza.manifests.filters import (
    InvalidFilterError,
    P,
    RenditionFilter,
    parse_filter_query,
)
from cadenza.manifests.hls import render_master
from cadenza.manifests.jsonio import presentation_from_json
from cadenza.manifests.model import MASTER_NAME, MPD_NAME, PRESENTATION_NAME, Presentation
from cadenza.manifests.steering import SteeringConfig
from cadenza.origin.cache import CachedObject, build_cached
from cadenza.origin.core.request import FILTER_KEYS
from cadenza.origin.errors import (
    BadRequestError,
    NoMatchingRenditionsError,
    StorageUnavailableError,
)
from cadenza.origin.keys import CACHE, METRICS, POPULATION, PRESENTATIONS, RENDERED, SETTINGS
from cadenza.origin.objects import load_object
from cadenza.origin.storage import ObjectInfo, StoredObject
from cadenza.origin.telemetry import Observed, guidance_for

# A population prior stands for a session's etp with this many sessions behind it.
MIN_PRIOR_SESSIONS: Final = 3


async def presentation_of(app: web.Application, track: str) -> tuple[Presentation, CachedObject]:
    """The track's model, parsed once per version of its presentation.json."""
    key = f"{track}/{PRESENTATION_NAME}"
    # Every decided segment asks: a fresh cached copy is taken without a load
    # (counted as the hit load_object would count).
    obj = app[CACHE].hot(key)
    if obj is None:
        obj, _ = await load_object(app, key)
    else:
        app[METRICS].cache_lookup("hit")
    parsed = app[PRESENTATIONS].get(track)
    if parsed is not None and parsed[0] == obj.etag:
        return parsed[1], obj
    try:
        presentation = presentation_from_json(obj.body)
    except InvalidPresentationError as exc:
        raise StorageUnavailableError(f"{track}: damaged presentation.json: {exc}", "data") from exc
    app[PRESENTATIONS][track] = (obj.etag, presentation)
    return presentation, obj


# The rendition filters, and ``?channels=`` (cadenza.manifests.channels) beside them.
SELECTION_KEYS: Final = FILTER_KEYS | {CHANNELS_QUERY}


def _selection(query: Mapping[str, str]) -> tuple[RenditionFilter, int | None]:
    try:
        raw = query.get(CHANNELS_QUERY)
        return parse_filter_query(query), None if raw is None else parse_channels(raw)
    except InvalidFilterError as exc:
        raise BadRequestError(str(exc)) from exc


def filter_values(query: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The rendition-filter arguments of a query, in key order (one reading of
    each: the shape a rendered manifest is cached under is also its filter)."""
    return tuple((k, query[k]) for k in sorted(SELECTION_KEYS & query.keys()))


def select(presentation: P, selected: tuple[tuple[str, str], ...]) -> P:
    """``presentation`` (VOD or live) filtered by ``selected`` (see
    :func:`filter_values`).  Raises :class:`BadRequestError` and
    :class:`NoMatchingRenditionsError`."""
    if not selected:
        return presentation
    renditions, channels = _selection(dict(selected))
    try:
        if channels is not None:
            presentation = keep_channels(presentation, channels)
        return renditions.apply(presentation)
    except NoRenditionsInModel as exc:
        raise NoMatchingRenditionsError(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class RenderedManifest:
    """A master playlist or MPD rendered for one request (:func:`render_manifest`)."""

    obj: CachedObject
    how: str  # the X-Cadenza-Cache value: "rendered" or "steered"
    vary_session: bool  # the session came from the CMCD-Session header


async def render_manifest(
    app: web.Application,
    key: str,
    selected: tuple[tuple[str, str], ...],
    observed: Observed | None,
    steering: SteeringConfig | None,
    *,
    personal_pathways: bool,
    model: tuple[Presentation, CachedObject] | None = None,
    licence_url: str | None = None,
) -> RenderedManifest:
    """A manifest rendered from the model: filtered by ``selected`` (see
    :func:`filter_values`), and steered for the session when one is known
    (``sid`` or CMCD ``sid``).  ``personal_pathways``: the steering block is
    this viewer's (signed, or named after the Host header); ``model``: the
    track's :func:`presentation_of`, when the caller has it already;
    ``licence_url``: this viewer's absolute ClearKey licence URL, written into
    an MPD of ``cbcs`` renditions as ``dashif:Laurl`` (then the MPD is this
    viewer's: ``private``, and its own ETag, as its bytes differ: RFC 9110
    8.8.3).  No request object: the fast transport renders with it too."""
    track, _, name = key.partition("/")
    presentation, source = model or await presentation_of(app, track)
    # The selection and the guidance's start and cap decide which renditions
    # are listed, in which order.
    shaped = select(presentation, selected)
    settings = app[SETTINGS]
    control = f"public, max-age={settings.manifest_max_age_s}"
    how = "rendered"
    vary_session = False
    guidance: Guidance | None = None
    if observed is not None and settings.guidance:
        guidance = await guidance_for(app, shaped, observed.state, observed.network_key)
        app[METRICS].steered(guidance.source.value)
        control = f"private, max-age={settings.manifest_max_age_s}"
        how = "steered"
        vary_session = observed.sid_from_header
    if steering is not None and personal_pathways:
        # Its pathway URIs carry this viewer's token, or its steering server
        # was named after the request's Host header: either way not for a
        # shared cache, which keys on the path and would hand a forged Host
        # to every later viewer.
        control = f"private, max-age={settings.manifest_max_age_s}"
    if name != MPD_NAME or not has_cbcs(shaped.renditions):
        licence_url = None  # nothing to write it into: the shared bytes
    if licence_url is not None:
        # Its token and Host are this viewer's, as for personal pathways.
        control = f"private, max-age={settings.manifest_max_age_s}"
    # The bytes depend only on these: steer, render, hash and gzip once per shape.
    # The hint is a function of the shaped presentation and these three: it is worked
    # out only when a shape is rendered, not on every request.
    guide = (
        None
        if guidance is None
        else (guidance.start_bitrate_bps, guidance.max_bitrate_bps, guidance.start_hint)
    )
    shape = (key, source.etag, selected, guide, steering, control, licence_url)
    rendered = app[RENDERED].get(shape)
    if rendered is None:
        hint = None if guidance is None else bitrate_hint(shaped, guidance)
        if guidance is not None:
            shaped = guide_presentation(shaped, guidance)
        if name == MASTER_NAME:
            text = render_master(shaped, steering, hint=hint)
        else:
            text = render_mpd(shaped, steering, hint=hint, licence_url=licence_url)
        body = text.encode("utf-8")
        info = ObjectInfo(len(body), source.mtime_s, "")
        rendered = build_cached(key, StoredObject(info, body), control)
        app[RENDERED][shape] = rendered
    return RenderedManifest(rendered, how, vary_session)


def nominal_segment_s(presentation: Presentation) -> float:
    """The track's segment duration: the packager's target, else the first
    rendition's first segment's."""
    if presentation.target_segment_duration_ticks:
        return presentation.target_segment_duration_ticks / presentation.timescale
    first = presentation.renditions[0]
    return first.segments[0].duration_ticks / first.timescale if first.segments else 4.0


def guided_segment(key: str) -> bool:
    """A media segment of a rendition (``<track>/<rendition>/<name>.m4s``): the
    requests that get CMSD when their session is known."""
    return key.count("/") == 2 and key.endswith(".m4s")


async def cmsd_for(
    app: web.Application,
    key: str,
    observed: Observed,
    model: tuple[Presentation, CachedObject] | None = None,
) -> tuple[str, str] | None:
    """The CMSD-Static and CMSD-Dynamic values for a media segment of a known
    session (CTA-5006); None when the rendition is not in the model.
    ``model``: as for :func:`render_manifest`."""
    track, rendition_id, name = key.split("/", 2)
    presentation, _ = model or await presentation_of(app, track)
    try:
        rendition = presentation.rendition(rendition_id)
    except KeyError:
        return None
    guidance = await guidance_for(app, presentation, observed.state, observed.network_key)
    dynamic = await cmsd_dynamic_for(app, observed, guidance.max_bitrate_bps)
    return cmsd_static(rendition, segment_duration_ms(rendition, name)), dynamic


async def cmsd_dynamic_for(
    app: web.Application, observed: Observed, max_bitrate_bps: int | None
) -> str:
    """``CMSD-Dynamic`` for a session (CTA-5006 4.3): this server's ``etp`` when it
    has one (:func:`origin_etp_bps`), and the guidance's ``mb`` when there is one."""
    etp_bps = await origin_etp_bps(app, observed.state, observed.network_key)
    if etp_bps is not None:
        return cmsd_dynamic(etp_bps, max_bitrate_bps)
    if max_bitrate_bps is not None:
        return f'"{SERVER_ID}";mb={max_bitrate_bps // 1000}'
    return f'"{SERVER_ID}"'


async def origin_etp_bps(
    app: web.Application, state: SessionState | None, network_key: str | None
) -> float | None:
    """CMSD ``etp`` (CTA-5006: the throughput the server estimates): the origin's
    own measurement of the session (:func:`cadenza.abr.session_origin.note_media_request`:
    delivery rates, request timing), else its network's population prior;
    never the player's own ``mtp`` echoed back, which tells it nothing.  None
    when the origin knows neither."""
    if state is not None and state.origin_rate_bps:
        return state.origin_rate_bps
    prior = await app[POPULATION].prior(network_key) if network_key else None
    return prior.p25_bps if prior is not None and prior.sessions >= MIN_PRIOR_SESSIONS else None


def private_control(control: str) -> str:
    """Personalised (CMSD): shared caches must not hand this session's answer to others."""
    return control.replace("public", "private")
