"""Track metadata: raw tags cleaned into the closed key set, then carried by
presentation.json, HLS ``EXT-X-SESSION-DATA`` (read back with the m3u8 library) and
the MPD (``ProgramInformation`` and descriptors, valid against the ISO schema).
Also how the renderers cope with an unmeasured loudness and with 5.1 plus stereo."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import m3u8
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from cadenza.manifests.dash import NS, render_mpd
from cadenza.manifests.dash_parse import parse_mpd
from cadenza.manifests.hls import render_master
from cadenza.manifests.jsonio import presentation_from_json, presentation_to_json
from cadenza.manifests.metadata import (
    MAX_VALUE_CHARS,
    MetadataKey,
    clean_metadata,
    clean_text,
    session_data_id,
)
from cadenza.manifests.model import Loudness, Presentation
from tests.manifests.test_rendering import make_presentation, make_rendition

DATA = Path(__file__).resolve().parent.parent / "data"
SCHEMA = etree.XMLSchema(etree.parse(str(DATA / "schemas" / "DASH-MPD.xsd")))

RAW_FLAC = [
    ("TITLE", "Blue\x00 in\tGreen\r\n"),
    ("ARTIST", "Miles Davis"),
    ("ALBUMARTIST", "Miles Davis"),
    ("ALBUM", "Kind of Blue"),
    ("DATE", "1959"),
    ("TRACKNUMBER", "03/05"),
    ("DISCNUMBER", "1"),
    ("ISRC", "us-sm1-59-00118"),
    ("LABEL", "Columbia"),
    ("REPLAYGAIN_TRACK_GAIN", "-6.20 dB"),
    ("REPLAYGAIN_TRACK_PEAK", "0.988525"),
    ("MUSICBRAINZ_TRACKID", "1A2B3C4D-0000-4000-8000-000000000001"),
    ("ENCODER", "Lavf61.7.100"),
    ("COMMENT", "ripped by me"),
]


def test_known_tags_are_mapped_cleaned_and_ordered() -> None:
    assert clean_metadata(RAW_FLAC) == (
        ("title", "Blue in Green"),
        ("artist", "Miles Davis"),
        ("album", "Kind of Blue"),
        ("album_artist", "Miles Davis"),
        ("date", "1959"),
        ("track_number", "3/5"),
        ("disc_number", "1"),
        ("isrc", "USSM15900118"),
        ("label", "Columbia"),
        ("replaygain_track_gain_db", "-6.20"),
        ("replaygain_track_peak", "0.988525"),
        ("musicbrainz_recording_id", "1a2b3c4d-0000-4000-8000-000000000001"),
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ISRC", "not-an-isrc"),
        ("TRACKNUMBER", "three"),
        ("TRACKNUMBER", "0"),
        ("REPLAYGAIN_TRACK_GAIN", "loud"),
        ("REPLAYGAIN_ALBUM_PEAK", "-1"),
        ("MUSICBRAINZ_ALBUMID", "12345"),
        ("TITLE", "\x01\x02\u200b"),  # nothing left once cleaned
    ],
)
def test_values_that_do_not_fit_their_key_are_dropped(name: str, value: str) -> None:
    assert clean_metadata([(name, value)]) == ()


def test_spellings_of_other_containers_map_to_the_same_keys() -> None:
    """MP4 as FFmpeg reads it (``track``, ``album_artist``), ID3 frames and ``TXXX``."""
    raw = [
        ("track", "7"),
        ("album_artist", "A"),
        ("TSRC", "GBAYE0601498"),
        ("MusicBrainz Album Id", "00000000-0000-4000-8000-000000000002"),
        ("publisher", "Parlophone"),
    ]
    assert dict(clean_metadata(raw)) == {
        "track_number": "7",
        "album_artist": "A",
        "isrc": "GBAYE0601498",
        "musicbrainz_release_id": "00000000-0000-4000-8000-000000000002",
        "label": "Parlophone",
    }


def test_the_first_usable_value_of_a_key_wins() -> None:
    """Container tags come first; an unusable one gives way to the next spelling."""
    raw = [("ISRC", "junk"), ("TSRC", "USRC17607839"), ("title", "A"), ("TITLE", "B")]
    assert clean_metadata(raw) == (("title", "A"), ("isrc", "USRC17607839"))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=2000))
def test_cleaned_text_is_bounded_and_free_of_control_characters(value: str) -> None:
    text = clean_text(value)
    assert len(text) <= MAX_VALUE_CHARS
    assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in text)
    assert "\u2028" not in text and "\u2029" not in text
    assert text == text.strip()


def _tagged(**extra: str) -> Presentation:
    metadata = (
        ("title", 'Say "Hello", World'),
        ("artist", "Zoë & the Ünicode, Band"),
        ("isrc", "USRC17607839"),
        ("label", "Label <Records>"),
        ("copyright", "℗ 2026 Someone"),
        ("replaygain_track_gain_db", "-6.20"),
        *extra.items(),
    )
    return dataclasses.replace(make_presentation(), metadata=metadata)


def test_master_carries_metadata_as_session_data_the_m3u8_library_reads() -> None:
    """RFC 8216 4.3.4.4: one EXT-X-SESSION-DATA per key, reverse-DNS DATA-ID; values are
    quoted-strings (4.2), so a double quote becomes a single one."""
    playlist = m3u8.loads(render_master(_tagged()))
    found = {d.data_id: d.value for d in playlist.session_data}
    assert found[session_data_id("title")] == "Say 'Hello', World"
    assert found["com.cadenza.title"] == "Say 'Hello', World"
    assert found["com.cadenza.artist"] == "Zoë & the Ünicode, Band"
    assert found["com.cadenza.isrc"] == "USRC17607839"
    assert found["com.cadenza.replaygain-track-gain-db"] == "-6.20"
    assert found["com.cadenza.loudness.integrated-lufs"] == "-14.2"
    assert len(playlist.playlists) == len(make_presentation().renditions)


def test_mpd_carries_metadata_and_stays_schema_valid() -> None:
    text = render_mpd(_tagged())
    root = etree.fromstring(text.encode())
    assert SCHEMA.validate(root), SCHEMA.error_log
    q = f"{{{NS}}}"
    info = root.find(f"{q}ProgramInformation")
    assert info is not None
    assert info.findtext(f"{q}Title") == 'Say "Hello", World'
    assert info.findtext(f"{q}Source") == "Label <Records>"
    assert info.findtext(f"{q}Copyright") == "℗ 2026 Someone"
    first = root.find(f"{q}Period/{q}AdaptationSet")
    assert first is not None
    props = {
        p.get("schemeIdUri"): p.get("value") for p in first.iterfind(f"{q}SupplementalProperty")
    }
    assert props["urn:cadenza:metadata:2026:isrc"] == "USRC17607839"
    assert props["urn:cadenza:metadata:2026:artist"] == "Zoë & the Ünicode, Band"
    # The loudness descriptor is still found among the metadata ones.
    assert parse_mpd(text).adaptation_sets[0].loudness == "I=-14.2 TP=-1.0 LRA=6.5"


def test_metadata_round_trips_through_presentation_json() -> None:
    presentation = _tagged()
    assert presentation_from_json(presentation_to_json(presentation)) == presentation


def test_an_unmeasured_loudness_renders_without_an_integrated_figure() -> None:
    loudness = Loudness(None, -3.0, None, "too short to gate: 0.200 s, under one 400 ms block")
    presentation = dataclasses.replace(make_presentation(), loudness=loudness)
    assert presentation_from_json(presentation_to_json(presentation)) == presentation
    master = render_master(presentation)
    assert "integrated-lufs" not in master
    assert 'DATA-ID="com.cadenza.loudness.true-peak-dbtp",VALUE="-3.0"' in master
    assert parse_mpd(render_mpd(presentation)).adaptation_sets[0].loudness == "TP=-3.0"


def test_presentation_json_refuses_a_null_loudness_without_a_reason() -> None:
    presentation = dataclasses.replace(make_presentation(), loudness=Loudness(None, -3.0))
    with pytest.raises(Exception, match="integrated_lufs"):
        presentation_from_json(presentation_to_json(presentation))


def test_a_51_source_with_stereo_downmix_gets_one_labelled_set_per_channel_count() -> None:
    """ISO/IEC 23009-1 5.3.3.1: no seamless switch between 5.1 and stereo, so each
    channel count has its own AdaptationSet, labelled for a listener's choice."""
    base = make_presentation()
    surround = tuple(
        dataclasses.replace(
            make_rendition(r.codec, (r.target_bitrate_bps or 0) // 1000 or None, channels=6),
            id=f"{r.id}-6ch",
        )
        for r in base.renditions
        if r.codec.value == "aac"
    )
    presentation = dataclasses.replace(base, renditions=surround + base.renditions, groups=())
    text = render_mpd(presentation)
    root = etree.fromstring(text.encode())
    assert SCHEMA.validate(root), SCHEMA.error_log
    q = f"{{{NS}}}"
    sets = root.findall(f"{q}Period/{q}AdaptationSet")
    labels = [s.findtext(f"{q}Label") for s in sets]
    assert labels == ["5.1", "Stereo", "Stereo", "Stereo"]
    channels = [
        {c.get("value") for c in s.iterfind(f"{q}Representation/{q}AudioChannelConfiguration")}
        for s in sets
    ]
    assert channels == [{"6"}, {"2"}, {"2"}, {"2"}]


def test_every_key_has_a_session_data_id_in_reverse_dns() -> None:
    for key in MetadataKey:
        data_id = session_data_id(key.value)
        assert data_id.startswith("com.cadenza.") and "_" not in data_id
