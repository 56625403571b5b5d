"""Manifests for origin-decided playback (one variant or Representation per switching
group, its segments at group URLs that carry the session) and the guidance channels
players read: DASH ``ServiceDescription``/``OperatingBandwidth`` and HLS
``EXT-X-SESSION-DATA``.  HLS is read back with the ``m3u8`` library, DASH checked
against the ISO schema."""

from __future__ import annotations

import m3u8
import pytest
from lxml import etree

from cadenza.manifests.dash import NS, render_group_mpd, render_mpd
from cadenza.manifests.dash_parse import parse_mpd
from cadenza.manifests.errors import InvalidBitrateHintError, NotSwitchableError
from cadenza.manifests.filters import RenditionFilter
from cadenza.manifests.hls import (
    MAX_BITRATE_DATA_ID,
    START_BITRATE_DATA_ID,
    parse_media_playlist,
    render_group_master,
    render_group_playlist,
    render_master,
    render_media_playlist,
)
from cadenza.manifests.model import BitrateHint, Codec, Presentation, SegmentLayout
from tests.manifests.test_rendering import GOLDEN, SCHEMA, make_presentation
from tests.manifests.test_steering_render import STEERING

HINT = BitrateHint(start_bitrate_bps=128_000, max_bitrate_bps=256_000, min_bitrate_bps=64_000)
# Characters a URL query, an HLS quoted string and a DASH template must not carry raw.
SID = 'a b&c$d"e/f'
SID_QUERY = "sid=a%20b%26c%24d%22e%2Ff"


def _q(tag: str) -> str:
    return f"{{{NS}}}{tag}"


# -- HLS ------------------------------------------------------------------------


def test_group_master_lists_one_variant_per_switchable_group() -> None:
    presentation = make_presentation()
    master = m3u8.loads(render_group_master(presentation, session_id=SID))
    assert [p.uri for p in master.playlists] == [
        f"group-aac/playlist.m3u8?{SID_QUERY}",
        f"group-opus/playlist.m3u8?{SID_QUERY}",
    ]
    aac = [presentation.rendition(i) for i in presentation.group("aac").rendition_ids]
    info = master.playlists[0].stream_info
    assert info.codecs == "mp4a.40.2"
    # RFC 8216 4.3.4.2: no choice of the origin may exceed BANDWIDTH.
    assert info.bandwidth == max(r.peak_bitrate_bps for r in aac)
    assert info.average_bandwidth == max(r.average_bitrate_bps for r in aac)
    assert master.version == 7


def test_group_master_without_a_session_has_plain_uris() -> None:
    master = m3u8.loads(render_group_master(make_presentation()))
    assert [p.uri for p in master.playlists] == [
        "group-aac/playlist.m3u8",
        "group-opus/playlist.m3u8",
    ]


def test_group_playlist_points_every_segment_at_the_group_and_maps_the_shared_init() -> None:
    presentation = make_presentation()
    group = presentation.group("aac")
    text = render_group_playlist(presentation, "aac", session_id=SID)
    playlist = m3u8.loads(text)
    top = presentation.rendition(group.rendition_ids[-1])
    assert [s.uri for s in playlist.segments] == [
        f"seg-{s.number:05d}.m4s?{SID_QUERY}" for s in top.segments
    ]
    # The init is the group's shared file, outside the group folder and without the
    # session, so that caches keep one copy.
    assert playlist.segment_map[0].uri == "../aac-320k/init.mp4"
    assert playlist.is_endlist and playlist.playlist_type == "vod"
    # Every rung's own playlist has the same segments, of the same durations.
    durations = [e.duration_s for e in parse_media_playlist(text).segments]
    for rendition_id in group.rendition_ids:
        own = parse_media_playlist(render_media_playlist(presentation.rendition(rendition_id)))
        assert [e.duration_s for e in own.segments] == durations


def test_group_playlist_refuses_unknown_and_single_rung_groups() -> None:
    presentation = make_presentation()
    with pytest.raises(KeyError):
        render_group_playlist(presentation, "mp3")
    with pytest.raises(NotSwitchableError) as error:
        render_group_playlist(presentation, "flac")
    assert error.value.groups == ("aac", "opus", "flac")


@pytest.mark.parametrize(
    "presentation",
    [
        RenditionFilter(codecs=frozenset({Codec.FLAC})).apply(make_presentation()),
        make_presentation(SegmentLayout.SINGLE),
    ],
    ids=["lossless-only", "single-file"],
)
def test_nothing_to_decide_is_a_typed_error(presentation: Presentation) -> None:
    with pytest.raises(NotSwitchableError) as error:
        render_group_master(presentation)
    assert error.value.track_id == "golden-track"
    with pytest.raises(NotSwitchableError):
        render_group_mpd(presentation)


def test_master_carries_the_start_hint_as_session_data() -> None:
    master = m3u8.loads(render_master(make_presentation(), hint=HINT))
    data = {d.data_id: d.value for d in master.session_data}
    assert data[START_BITRATE_DATA_ID] == "128000"
    assert data[MAX_BITRATE_DATA_ID] == "256000"
    # Loudness session data stays; the variants are the ordinary ones.
    assert "com.cadenza.loudness.integrated-lufs" in data
    assert len(master.playlists) == len(make_presentation().renditions)


def test_group_master_carries_the_start_hint_too() -> None:
    master = m3u8.loads(render_group_master(make_presentation(), session_id="s1", hint=HINT))
    assert {d.data_id: d.value for d in master.session_data}[START_BITRATE_DATA_ID] == "128000"


def test_no_hint_leaves_the_master_as_packaged() -> None:
    assert render_master(make_presentation(), hint=None) == (GOLDEN / "master.m3u8").read_text()
    assert START_BITRATE_DATA_ID not in render_master(make_presentation(), STEERING)


def test_hint_and_steering_together_keep_the_steering_tag_first() -> None:
    lines = render_master(make_presentation(), STEERING, hint=HINT).splitlines()
    steering = next(i for i, line in enumerate(lines) if "CONTENT-STEERING" in line)
    start = next(i for i, line in enumerate(lines) if START_BITRATE_DATA_ID in line)
    assert steering == 3 < start


# -- DASH ----------------------------------------------------------------------


def test_group_mpd_is_schema_valid_with_one_representation_per_group() -> None:
    presentation = make_presentation()
    text = render_group_mpd(presentation, session_id=SID, hint=HINT)
    document = etree.fromstring(text.encode())
    assert SCHEMA.validate(document), SCHEMA.error_log
    parsed = parse_mpd(text)
    assert [[r.id for r in a.representations] for a in parsed.adaptation_sets] == [
        ["aac"],
        ["opus"],
    ]
    aac_rep = parsed.adaptation_sets[0].representations[0]
    members = [presentation.rendition(i) for i in presentation.group("aac").rendition_ids]
    assert aac_rep.bandwidth_bps == max(r.peak_bitrate_bps for r in members)
    assert aac_rep.segment_durations_ticks == tuple(s.duration_ticks for s in members[0].segments)
    templates = document.findall(f".//{_q('SegmentTemplate')}")
    assert [(t.get("initialization"), t.get("media")) for t in templates] == [
        ("aac-320k/init.mp4", f"group-aac/seg-$Number%05d$.m4s?{SID_QUERY}"),
        ("opus-128k/init.mp4", f"group-opus/seg-$Number%05d$.m4s?{SID_QUERY}"),
    ]
    # No Representation-level BaseURL: the template paths are relative to the track.
    assert document.find(f".//{_q('Representation')}/{_q('BaseURL')}") is None


def test_group_mpd_media_template_has_only_the_number_identifier() -> None:
    text = render_group_mpd(make_presentation(), session_id=SID)
    for template in etree.fromstring(text.encode()).iter(_q("SegmentTemplate")):
        assert str(template.get("media")).count("$") == 2


def _operating_bandwidth(text: str) -> dict[str, str]:
    document = etree.fromstring(text.encode())
    assert SCHEMA.validate(document), SCHEMA.error_log
    services = document.findall(_q("ServiceDescription"))
    assert len(services) == 1
    bandwidth = services[0].find(_q("OperatingBandwidth"))
    assert bandwidth is not None
    return {str(k): str(v) for k, v in bandwidth.attrib.items()}


@pytest.mark.parametrize("layout", list(SegmentLayout))
def test_mpd_carries_guidance_as_operating_bandwidth(layout: SegmentLayout) -> None:
    attributes = _operating_bandwidth(render_mpd(make_presentation(layout), hint=HINT))
    assert attributes == {"mediaType": "audio", "min": "64000", "max": "256000", "target": "128000"}


def test_operating_bandwidth_without_a_minimum() -> None:
    hint = BitrateHint(start_bitrate_bps=64_000, max_bitrate_bps=320_000)
    attributes = _operating_bandwidth(render_group_mpd(make_presentation(), hint=hint))
    assert attributes == {"mediaType": "audio", "max": "320000", "target": "64000"}


def test_service_description_sits_between_steering_base_urls_and_content_steering() -> None:
    text = render_mpd(make_presentation(), STEERING, hint=HINT)
    document = etree.fromstring(text.encode())
    assert SCHEMA.validate(document), SCHEMA.error_log
    order = [etree.QName(child).localname for child in document]
    assert order == ["BaseURL", "BaseURL", "ServiceDescription", "ContentSteering", "Period"]


def test_no_hint_leaves_the_mpd_as_packaged() -> None:
    assert render_mpd(make_presentation(), hint=None) == (GOLDEN / "manifest.mpd").read_text()


def test_a_hint_out_of_order_is_refused() -> None:
    with pytest.raises(InvalidBitrateHintError) as error:
        BitrateHint(start_bitrate_bps=300_000, max_bitrate_bps=200_000)
    assert (error.value.start_bitrate_bps, error.value.max_bitrate_bps) == (300_000, 200_000)
    with pytest.raises(InvalidBitrateHintError):
        BitrateHint(start_bitrate_bps=64_000, max_bitrate_bps=200_000, min_bitrate_bps=96_000)
