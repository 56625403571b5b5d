"""One rung encoded and cut into CMAF segments, decoded back by FFmpeg."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from cadenza.manifests.model import Codec, SegmentLayout
from cadenza.packager.decode import Decoder, coalesce
from cadenza.packager.encode import RungEncoder, RungPlan
from tests.conftest import MakeInput
from tests.packager.verify import decoded_ticks, read_edit_list, rendition_bytes

CASES = [(Codec.AAC, 128_000, 44100), (Codec.OPUS, 64_000, 48000), (Codec.FLAC, None, 44100)]


@pytest.mark.parametrize("layout", list(SegmentLayout))
@pytest.mark.parametrize(("codec", "bitrate_bps", "rate_hz"), CASES)
def test_rung_decodes_to_priming_plus_source_plus_under_a_frame(
    make_input: MakeInput,
    tmp_path: Path,
    layout: SegmentLayout,
    codec: Codec,
    bitrate_bps: int | None,
    rate_hz: int,
) -> None:
    """Edit list media_time = priming, duration = source; padding stays under one frame."""
    plan = RungPlan(
        "r",
        codec,
        bitrate_bps,
        rate_hz,
        2,
        16 if codec is Codec.FLAC else None,
        Fraction(1),
        layout,
    )
    with Decoder(make_input("flac", 44100, 2, 2.5)) as decoder:
        encoder = RungEncoder(
            plan, tmp_path / "r", source_rate_hz=44100, source_layout=decoder.probe.layout_name
        )
        for block in coalesce(decoder.frames(), 3000):  # blocks not a multiple of any frame
            encoder.feed(block)
    rendition = encoder.finish()
    data = rendition_bytes(tmp_path / "r", rendition)
    media_time, duration = read_edit_list(data)
    assert duration == round(2.5 * rate_hz)
    assert media_time == rendition.encoder_delay_ticks
    padding = decoded_ticks(data) - media_time - duration
    assert 0 <= padding < 1024
