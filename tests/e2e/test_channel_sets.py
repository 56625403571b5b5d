"""hls.js plays a 5.1 track's surround set (``master.m3u8?channels=6``) in headless
Chromium, switching only among that set's variants."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from fractions import Fraction

import av
import m3u8
import numpy as np
import pytest
from av.audio.stream import AudioStream

from cadenza.manifests.ladder import Ladder, Rung
from cadenza.manifests.model import Codec
from cadenza.packager.track import PackageOptions, package_track
from samples.make_sample import LAYOUTS, synthesize
from tests.e2e.conftest import ROOT, Drive
from tests.origin.originproc import cadenza_serve

pytestmark = pytest.mark.e2e
RATE_HZ = 48000
TRACK_S = 12.0


@pytest.fixture(scope="module")
def surround_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("surround")
    samples = np.zeros((6, round(TRACK_S * RATE_HZ)), dtype=np.float32)
    samples[0:3] = synthesize(TRACK_S, RATE_HZ, 3)  # front left, right and centre
    source = folder / "surround.flac"
    with av.open(str(source), "w") as out:
        stream = out.add_stream("flac", rate=RATE_HZ)
        assert isinstance(stream, AudioStream)
        stream.layout = LAYOUTS[6]
        stream.time_base = Fraction(1, RATE_HZ)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=LAYOUTS[6])
        frame.sample_rate = RATE_HZ
        frame.pts = 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    root = folder / "out"
    root.mkdir()
    ladder = Ladder("t", (Rung(Codec.AAC, 64_000), Rung(Codec.AAC, 128_000)))
    result = package_track(source, root, PackageOptions(ladder=ladder))
    assert result.status == "packaged", result.error
    with cadenza_serve(str(root), folder, cwd=ROOT) as origin:
        yield f"{origin.url}/{result.track_id}"


def test_hlsjs_plays_the_surround_set_and_stays_in_it(drive: Drive, surround_origin: str) -> None:
    src = f"{surround_origin}/master.m3u8?channels=6"
    with urllib.request.urlopen(src, timeout=10) as response:
        listed = m3u8.loads(response.read().decode()).playlists
    assert {p.uri.split("/")[0] for p in listed} == {"aac-160k-6ch", "aac-320k-6ch"}
    bandwidths = {p.stream_info.bandwidth for p in listed}
    result = drive(player="hls", src=src, play_s=6, timeout_s=40)
    final = result["final"]
    assert final["fatal"] is None, final["errors"]
    assert final["current_time"] >= 6
    assert final["rms_max"] > 0.01
    rates = {s["to_bps"] for s in final["switches"]}
    assert rates and rates <= bandwidths, (rates, bandwidths)
