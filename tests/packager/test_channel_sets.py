"""A multichannel source's two channel counts: HLS lists one of them (stereo by
default, ``?channels=6`` for the other), and each carries the loudness of what it
plays (the stereo downmix measured on its own, in the same decode pass)."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from pathlib import Path

import av
import m3u8
import numpy as np
import pytest
from av.audio.stream import AudioStream
from lxml import etree

from cadenza.manifests.channels import (
    hls_channel_count,
    keep_channels,
    loudness_of,
    parse_channels,
)
from cadenza.manifests.dash import LOUDNESS_SCHEME, render_mpd
from cadenza.manifests.errors import NoMatchingRenditionsError
from cadenza.manifests.filters import InvalidFilterError
from cadenza.manifests.hls import (
    LOUDNESS_DATA_IDS,
    render_group_master,
    render_master,
)
from cadenza.manifests.jsonio import presentation_from_json, presentation_to_json
from cadenza.manifests.ladder import Ladder, Rung
from cadenza.manifests.model import Codec, Loudness, Presentation
from cadenza.origin.errors import BadRequestError
from cadenza.origin.errors import NoMatchingRenditionsError as OriginNoMatch
from cadenza.origin.rendering import filter_values, select
from cadenza.packager.downmix import StereoDownmix
from cadenza.packager.loudness import LoudnessMeter, channel_weights
from cadenza.packager.track import PackageOptions, package_track
from samples.make_sample import LAYOUTS, synthesize
from tests.manifests.test_rendering import make_rendition

RATE_HZ = 48000
NAMES_51 = ("FL", "FR", "FC", "LFE", "BL", "BR")
SOURCE = Loudness(integrated_lufs=-14.0, true_peak_dbtp=-1.0, loudness_range_lu=5.0)
DOWNMIX = Loudness(integrated_lufs=-21.7, true_peak_dbtp=-8.6, loudness_range_lu=5.0)
NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}


def _surround_presentation() -> Presentation:
    """AAC at 6 channels (two rungs) and its stereo downmix (two rungs, own loudness)."""
    six = [
        dataclasses.replace(make_rendition(Codec.AAC, k, channels=6), id=f"aac-{k}k-6ch")
        for k in (160, 320)
    ]
    two = [
        dataclasses.replace(
            make_rendition(Codec.AAC, k, channels=2), id=f"aac-{k}k-2ch", loudness=DOWNMIX
        )
        for k in (64, 128)
    ]
    return Presentation(
        track_id="surround",
        timescale=44100,
        duration_ticks=six[0].duration_ticks,
        renditions=(*six, *two),
        loudness=SOURCE,
    )


def _variants(text: str) -> list[str]:
    return [p.uri for p in m3u8.loads(text).playlists]


def _session_data(text: str) -> dict[str, str]:
    return {d.data_id: d.value for d in m3u8.loads(text).session_data}


# -- which channel count HLS lists --------------------------------------------------


def test_the_master_lists_the_stereo_set_only_with_its_own_loudness() -> None:
    text = render_master(_surround_presentation())
    assert _variants(text) == ["aac-64k-2ch/playlist.m3u8", "aac-128k-2ch/playlist.m3u8"]
    data = _session_data(text)
    assert data[LOUDNESS_DATA_IDS["integrated"]] == "-21.7"
    assert data[LOUDNESS_DATA_IDS["true_peak"]] == "-8.6"


def test_channels_6_selects_the_surround_set_with_the_tracks_loudness() -> None:
    p = _surround_presentation()
    selected = filter_values({"channels": "6", "codec": "aac", "other": "x"})
    assert selected == (("channels", "6"), ("codec", "aac"))
    text = render_master(select(p, selected))
    assert _variants(text) == ["aac-160k-6ch/playlist.m3u8", "aac-320k-6ch/playlist.m3u8"]
    assert _session_data(text)[LOUDNESS_DATA_IDS["integrated"]] == "-14.0"


def test_the_origin_decided_master_lists_one_channel_count_too() -> None:
    p = _surround_presentation()
    assert _variants(render_group_master(p)) == ["group-aac-2/playlist.m3u8"]
    assert p.group("aac-2").channels == 2
    six = keep_channels(p, 6)
    assert _variants(render_group_master(six)) == ["group-aac/playlist.m3u8"]


def test_without_stereo_the_fewest_channels_are_listed() -> None:
    assert hls_channel_count([6, 2, 1]) == 2
    assert hls_channel_count([6, 1]) == 1
    assert hls_channel_count([6]) == 6
    assert hls_channel_count([]) is None


@pytest.mark.parametrize("raw", ["0", "x", "", "65", "6,2", "-2", "١"])
def test_a_bad_channel_count_is_refused(raw: str) -> None:
    with pytest.raises(InvalidFilterError):
        parse_channels(raw)
    with pytest.raises(BadRequestError):
        select(_surround_presentation(), (("channels", raw),))


def test_a_channel_count_with_no_rendition_is_no_match() -> None:
    with pytest.raises(NoMatchingRenditionsError):
        keep_channels(_surround_presentation(), 8)
    with pytest.raises(OriginNoMatch):
        select(_surround_presentation(), (("channels", "8"),))


def test_the_mpd_gives_each_channel_count_its_loudness() -> None:
    mpd = etree.fromstring(render_mpd(_surround_presentation()).encode())
    prop = f"d:SupplementalProperty[@schemeIdUri='{LOUDNESS_SCHEME}']"
    values = {
        str(a.findtext("d:Label", namespaces=NS)): [e.get("value") for e in a.iterfind(prop, NS)]
        for a in mpd.iterfind(".//d:AdaptationSet", NS)
    }
    assert values == {"5.1": ["I=-14.0 TP=-1.0 LRA=5.0"], "Stereo": ["I=-21.7 TP=-8.6 LRA=5.0"]}


def test_a_renditions_loudness_round_trips_through_presentation_json() -> None:
    p = _surround_presentation()
    back = presentation_from_json(presentation_to_json(p))
    assert back == p
    assert back.rendition("aac-64k-2ch").loudness == DOWNMIX
    assert back.rendition("aac-160k-6ch").loudness is None
    assert loudness_of(back, back.renditions) == SOURCE  # mixed set: the track's


# -- the packager measures the downmix ----------------------------------------------


def _write_51(path: Path, samples: np.ndarray) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("flac", rate=RATE_HZ)
        assert isinstance(stream, AudioStream)
        stream.layout = LAYOUTS[6]
        stream.time_base = Fraction(1, RATE_HZ)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples), format="fltp", layout=LAYOUTS[6]
        )
        frame.sample_rate = RATE_HZ
        frame.pts = 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return path


def test_stereo_downmix_rungs_carry_the_loudness_of_the_downmix(tmp_path: Path) -> None:
    """Music in the front pair only: the BS.775 sum divides it by 2.414, so the
    downmix is 7.66 dB quieter than the source, and is recorded so."""
    samples = np.zeros((6, 4 * RATE_HZ), dtype=np.float32)
    samples[0:2] = synthesize(4.0, RATE_HZ, 2)
    source = _write_51(tmp_path / "surround.flac", samples)
    ladder = Ladder("t", (Rung(Codec.AAC, 64_000), Rung(Codec.AAC, 128_000)))
    out = tmp_path / "out"
    out.mkdir()
    result = package_track(source, out, PackageOptions(ladder=ladder))
    assert result.status == "packaged", result.error
    folder = out / result.track_id
    p = presentation_from_json((folder / "presentation.json").read_bytes())
    assert p.loudness is not None and p.loudness.integrated_lufs is not None
    six = [r for r in p.renditions if r.channels == 6]
    two = [r for r in p.renditions if r.channels == 2]
    assert six and two and all(r.loudness is None for r in six)
    downmix = two[0].loudness
    assert downmix is not None and downmix.integrated_lufs is not None
    assert {r.loudness for r in two} == {downmix}

    # The same figures as a meter run on the downmix computed here.
    meter = LoudnessMeter(RATE_HZ, channel_weights(("FL", "FR")))
    meter.add(StereoDownmix(NAMES_51)(samples))
    assert downmix == meter.result()
    drop_db = 20 * math.log10(1 + 2 * math.sqrt(0.5))  # FL + 0.7071 FC + 0.7071 BL
    assert p.loudness.integrated_lufs - downmix.integrated_lufs == pytest.approx(drop_db, abs=0.05)
    assert p.loudness.true_peak_dbtp - downmix.true_peak_dbtp == pytest.approx(drop_db, abs=0.1)

    # Where a player normalises from: the stored master (stereo set) and the MPD.
    master = (folder / "master.m3u8").read_text()
    assert {v.split("/")[0] for v in _variants(master)} == {r.id for r in two}
    integrated = _session_data(master)[LOUDNESS_DATA_IDS["integrated"]]
    assert integrated == f"{downmix.integrated_lufs:.1f}"
    mpd = (folder / "manifest.mpd").read_text()
    assert f"I={downmix.integrated_lufs:.1f} " in mpd
    assert f"I={p.loudness.integrated_lufs:.1f} " in mpd
