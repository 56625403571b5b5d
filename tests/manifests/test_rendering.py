"""Manifest rendering: golden files, round trips through m3u8 and lxml, the
schema, and properties over random presentations.

Regenerate the golden files after an intended change with:
    CADENZA_REGEN_GOLDEN=1 .venv/bin/pytest tests/manifests
"""

from __future__ import annotations

import dataclasses
import os
from fractions import Fraction
from pathlib import Path

import m3u8
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from cadenza.manifests.dash import render_mpd, xs_duration
from cadenza.manifests.dash_parse import parse_mpd
from cadenza.manifests.errors import InvalidPresentationError, NoMatchingRenditionsError
from cadenza.manifests.filters import InvalidFilterError, parse_filter_query
from cadenza.manifests.hls import (
    parse_master,
    parse_media_playlist,
    render_master,
    render_media_playlist,
)
from cadenza.manifests.jsonio import (
    presentation_from_dict,
    presentation_from_json,
    presentation_to_json,
)
from cadenza.manifests.model import (
    ByteRange,
    Codec,
    Loudness,
    Presentation,
    Rendition,
    Segment,
    SegmentLayout,
    SourceInfo,
)

DATA = Path(__file__).resolve().parent.parent / "data"
GOLDEN = DATA / "golden"
SCHEMA = etree.XMLSchema(etree.parse(str(DATA / "schemas" / "DASH-MPD.xsd")))
CODECS = {Codec.AAC: "mp4a.40.2", Codec.OPUS: "opus", Codec.FLAC: "fLaC"}


def make_rendition(
    codec: Codec,
    kbps: int | None,
    *,
    rate: int = 44100,
    channels: int = 2,
    frame: int = 1024,
    frames_per_segment: int = 172,
    source_ticks: int = 37 * 44100 + 12345,
    delay: int = 1024,
    layout: SegmentLayout = SegmentLayout.SEPARATE,
) -> Rendition:
    """A rendition cut the way the packager cuts: whole frames, priming in segment 1."""
    total_frames = -(-(source_ticks + delay) // frame)
    segments = []
    start = 0
    offset = 1000
    number = 1
    remaining = total_frames
    while remaining:
        frames = min(frames_per_segment, remaining)
        size = max(200, (kbps or 900) * 1000 * frames * frame // rate // 8)
        byte_range = ByteRange(offset, size) if layout is SegmentLayout.SINGLE else None
        segments.append(Segment(number, start, frames * frame, size, byte_range))
        start += frames * frame
        offset += size
        remaining -= frames
        number += 1
    return Rendition(
        id=f"{codec}-{kbps}k" if kbps else str(codec),
        codec=codec,
        codecs=CODECS[codec],
        sample_rate_hz=rate,
        channels=channels,
        timescale=rate,
        average_bitrate_bps=(kbps or 900) * 1000,
        peak_bitrate_bps=(kbps or 900) * 1000 + 1234,
        encoder_delay_ticks=delay,
        duration_ticks=source_ticks,
        init_size_bytes=700,
        segments=tuple(segments),
        target_bitrate_bps=kbps * 1000 if kbps else None,
        bits_per_sample=16 if codec is Codec.FLAC else None,
        layout=layout,
        init_range=ByteRange(0, 700) if layout is SegmentLayout.SINGLE else None,
        index_range=ByteRange(700, 300) if layout is SegmentLayout.SINGLE else None,
    )


def make_presentation(
    layout: SegmentLayout = SegmentLayout.SEPARATE, *, loudness: bool = True, channels: int = 2
) -> Presentation:
    source = 37 * 44100 + 12345
    opus_ticks = source * 48000 // 44100
    renditions = (
        *(
            make_rendition(Codec.AAC, k, layout=layout, channels=channels)
            for k in (64, 128, 256, 320)
        ),
        *(
            make_rendition(
                Codec.OPUS,
                k,
                rate=48000,
                frame=960,
                frames_per_segment=200,
                source_ticks=opus_ticks,
                delay=312,
                layout=layout,
                channels=channels,
            )
            for k in (64, 128)
        ),
        make_rendition(
            Codec.FLAC,
            None,
            frame=4608,
            frames_per_segment=38,
            delay=0,
            layout=layout,
            channels=channels,
        ),
    )
    return Presentation(
        track_id="golden-track",
        timescale=44100,
        duration_ticks=source,
        renditions=renditions,
        loudness=Loudness(-14.23, -1.04, 6.5) if loudness else None,
        source=SourceInfo("golden-track.flac", "flac", 44100, channels, 16),
        target_segment_duration_ticks=4 * 44100,
    )


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("CADENZA_REGEN_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} changed; see module docstring"


@pytest.mark.parametrize(
    ("name", "render"),
    [
        ("master.m3u8", lambda: render_master(make_presentation())),
        ("aac-128k.m3u8", lambda: render_media_playlist(make_presentation().renditions[1])),
        (
            "single-aac-128k.m3u8",
            lambda: render_media_playlist(make_presentation(SegmentLayout.SINGLE).renditions[1]),
        ),
        ("manifest.mpd", lambda: render_mpd(make_presentation())),
        ("single.mpd", lambda: render_mpd(make_presentation(SegmentLayout.SINGLE))),
        ("presentation.json", lambda: presentation_to_json(make_presentation())),
    ],
)
def test_rendering_matches_the_golden_file(name: str, render: object) -> None:
    assert callable(render)
    _golden(name, render())


@pytest.mark.parametrize("layout", list(SegmentLayout))
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_mpd_validates_against_the_iso_schema(layout: SegmentLayout, channels: int) -> None:
    """ISO/IEC 23009-1: every MPD we write validates against the official XSD."""
    document = etree.fromstring(render_mpd(make_presentation(layout, channels=channels)).encode())
    assert SCHEMA.validate(document), SCHEMA.error_log


def test_mpd_has_one_adaptation_set_per_codec_family() -> None:
    parsed = parse_mpd(render_mpd(make_presentation()))
    assert [a.codecs for a in parsed.adaptation_sets] == [
        frozenset({"mp4a.40.2"}),
        frozenset({"opus"}),
        frozenset({"fLaC"}),
    ]


def test_mpd_timeline_round_trips_to_the_segment_ticks() -> None:
    presentation = make_presentation()
    parsed = parse_mpd(render_mpd(presentation))
    reps = [r for a in parsed.adaptation_sets for r in a.representations]
    for rep, rendition in zip(reps, presentation.renditions, strict=True):
        assert rep.segment_starts_ticks == tuple(s.start_ticks for s in rendition.segments)
        assert rep.segment_durations_ticks == tuple(s.duration_ticks for s in rendition.segments)
        assert rep.bandwidth_bps == rendition.peak_bitrate_bps


def test_mpd_duration_covers_the_presentation() -> None:
    presentation = make_presentation()
    parsed = parse_mpd(render_mpd(presentation))
    exact = Fraction(presentation.duration_ticks, presentation.timescale)
    assert exact <= parsed.duration_s < exact + Fraction(1, 1000)


def test_single_file_mpd_points_index_range_at_the_sidx() -> None:
    presentation = make_presentation(SegmentLayout.SINGLE)
    rep = parse_mpd(render_mpd(presentation)).adaptation_sets[0].representations[0]
    assert rep.index_range == (700, 999)


def test_master_round_trips_through_the_m3u8_library() -> None:
    """RFC 8216 4.3.4.2: BANDWIDTH (peak), AVERAGE-BANDWIDTH and CODECS per variant."""
    presentation = make_presentation()
    playlists = m3u8.loads(render_master(presentation)).playlists
    assert [
        (p.uri, p.stream_info.bandwidth, p.stream_info.average_bandwidth, p.stream_info.codecs)
        for p in playlists
    ] == [
        (r.playlist_uri, r.peak_bitrate_bps, r.average_bitrate_bps, r.codecs)
        for r in presentation.renditions
    ]


def test_master_round_trips_through_our_parser() -> None:
    presentation = make_presentation()
    variants = parse_master(render_master(presentation))
    assert [v.uri for v in variants] == [r.playlist_uri for r in presentation.renditions]


def test_master_carries_loudness_session_data() -> None:
    text = render_master(make_presentation())
    session = m3u8.loads(text).session_data
    values = {s.data_id: s.value for s in session}
    assert values["com.cadenza.loudness.integrated-lufs"] == "-14.2"
    assert values["com.cadenza.loudness.true-peak-dbtp"] == "-1.0"


def test_media_playlist_durations_sum_to_the_media_duration() -> None:
    rendition = make_presentation().renditions[0]
    playlist = m3u8.loads(render_media_playlist(rendition))
    total = sum(Fraction(str(s.duration)) for s in playlist.segments)
    assert abs(total - Fraction(rendition.media_duration_ticks, rendition.timescale)) < Fraction(
        len(rendition.segments), 1_000_000
    )


def test_media_playlist_is_vod_with_map_and_endlist() -> None:
    parsed = parse_media_playlist(render_media_playlist(make_presentation().renditions[0]))
    assert (parsed.version, parsed.playlist_type, parsed.map_uri, parsed.endlist) == (
        7,
        "VOD",
        "init.mp4",
        True,
    )


def test_single_file_playlist_uses_byte_ranges() -> None:
    rendition = make_presentation(SegmentLayout.SINGLE).renditions[0]
    parsed = parse_media_playlist(render_media_playlist(rendition))
    assert parsed.map_byte_range == (700, 0)
    assert [s.byte_range for s in parsed.segments] == [
        (s.byte_range.length_bytes, s.byte_range.offset_bytes)
        for s in rendition.segments
        if s.byte_range
    ]


def test_presentation_json_round_trips_exactly() -> None:
    for layout in SegmentLayout:
        presentation = make_presentation(layout)
        assert presentation_from_json(presentation_to_json(presentation)) == presentation


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("track_id"), "track_id"),
        (lambda d: d.update(schema=2), "schema"),
        (lambda d: d["renditions"][0].update(codec="mp3"), "renditions[0].codec"),
        (
            lambda d: d["renditions"][0]["segments"][0].update(size_bytes=-5),
            "renditions[0].segments[0].size_bytes",
        ),
        (lambda d: d["renditions"][1].update(channels="two"), "renditions[1].channels"),
        (lambda d: d.update(renditions=[]), "renditions"),
    ],
)
def test_malformed_presentation_names_the_field(mutate: object, field: str) -> None:
    import json

    document = json.loads(presentation_to_json(make_presentation()))
    assert callable(mutate)
    mutate(document)
    with pytest.raises(InvalidPresentationError) as error:
        presentation_from_dict(document)
    assert error.value.field == field


def test_invalid_json_is_an_invalid_presentation() -> None:
    with pytest.raises(InvalidPresentationError, match="not valid JSON"):
        presentation_from_json(b"{not json")


def test_codec_filter_keeps_only_that_codec() -> None:
    kept = parse_filter_query({"codec": "opus"}).apply(make_presentation())
    assert [r.id for r in kept.renditions] == ["opus-64k", "opus-128k"]


def test_bitrate_filter_bounds_are_inclusive_kbps() -> None:
    kept = parse_filter_query({"min_bitrate": "128", "max_bitrate": "256"}).apply(
        make_presentation()
    )
    assert [r.id for r in kept.renditions] == ["aac-128k", "aac-256k", "opus-128k"]


def test_filter_matching_nothing_raises() -> None:
    with pytest.raises(NoMatchingRenditionsError):
        parse_filter_query({"codec": "flac", "max_bitrate": "64"}).apply(make_presentation())


@pytest.mark.parametrize(
    "query",
    [
        {"codec": "mp3"},
        {"codec": ""},
        {"min_bitrate": "fast"},
        {"max_bitrate": "-1"},
        {"min_bitrate": "300", "max_bitrate": "100"},
    ],
)
def test_bad_filter_values_are_refused(query: dict[str, str]) -> None:
    with pytest.raises(InvalidFilterError):
        parse_filter_query(query)


def test_xs_duration_rounds_up_to_the_millisecond() -> None:
    assert xs_duration(44101, 44100) == "PT1.001S"


# -- properties over random presentations ------------------------------------


@st.composite
def presentations(draw: st.DrawFn) -> Presentation:
    layout = draw(st.sampled_from(list(SegmentLayout)))
    codec = draw(st.sampled_from(list(Codec)))
    rate = draw(st.sampled_from([8000, 22050, 44100, 48000, 96000, 192000]))
    frame = draw(st.sampled_from([960, 1024, 4096, 4608]))
    per_segment = draw(st.integers(1, 400))
    source = draw(st.integers(1, rate * 600))
    kbps = None if codec is Codec.FLAC else draw(st.integers(6, 512))
    rendition = make_rendition(
        codec,
        kbps,
        rate=rate,
        frame=frame,
        frames_per_segment=per_segment,
        source_ticks=source,
        delay=draw(st.integers(0, 2048)),
        layout=layout,
        channels=draw(st.sampled_from([1, 2, 6])),
    )
    loudness = draw(
        st.none()
        | st.builds(Loudness, st.floats(-70, 0), st.floats(-120, 3), st.none() | st.floats(0, 40))
    )
    return Presentation("t", rate, source, (rendition,), loudness)


@settings(max_examples=60, deadline=None)
@given(presentations())
def test_any_presentation_renders_a_schema_valid_mpd(presentation: Presentation) -> None:
    document = etree.fromstring(render_mpd(presentation).encode())
    assert SCHEMA.validate(document), SCHEMA.error_log


@settings(max_examples=60, deadline=None)
@given(presentations())
def test_target_duration_bounds_every_rounded_extinf(presentation: Presentation) -> None:
    """RFC 8216 4.3.3.1."""
    parsed = parse_media_playlist(render_media_playlist(presentation.renditions[0]))
    assert all(
        int(s.duration_s + Fraction(1, 2)) <= parsed.target_duration_s for s in parsed.segments
    )


@settings(max_examples=60, deadline=None)
@given(presentations())
def test_any_presentation_round_trips_through_json(presentation: Presentation) -> None:
    assert presentation_from_json(presentation_to_json(presentation)) == presentation


def test_replace_keeps_models_frozen() -> None:
    presentation = make_presentation()
    with pytest.raises(dataclasses.FrozenInstanceError):
        presentation.track_id = "x"  # type: ignore[misc]
