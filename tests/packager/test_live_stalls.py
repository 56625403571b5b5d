"""The live ingest under a scripted input and a fake clock: a stall becomes gap
segments and the timeline keeps pace; a format change brings new init segments and a
discontinuity; an input that never starts fails after the (injected) timeout; and at
every moment ``live.json`` names only files that are there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cadenza.manifests.live import LIVE_STATE_NAME, LivePresentation
from cadenza.manifests.live_json import live_from_json
from cadenza.packager.errors import InputError
from cadenza.packager.live.cli import LIVE_LADDER
from cadenza.packager.live.grid import LIVE_RATE_HZ
from cadenza.packager.live.ingest import LiveOptions, run_live
from cadenza.packager.live.source import FormatChange
from tests.packager.live_support import (
    EPOCH_S,
    STALL,
    FakeClock,
    Instant,
    ScriptedSource,
    blocks,
    decode,
    named_files,
    stream_bytes,
)

PART_TICKS = 15360
LIVE = LiveOptions(LIVE_LADDER, detect_stalls=True)


def _run(script: list[object], folder: Path, clock: FakeClock) -> LivePresentation:
    seen: list[int] = []

    def check_named_files_exist() -> None:
        state = folder / "t" / LIVE_STATE_NAME
        if state.exists():
            model = live_from_json(state.read_bytes())
            for path in named_files(model):
                assert (folder / "t" / path).is_file(), path
            seen.append(model.updated_ms)

    source = ScriptedSource(script, clock, on_read=check_named_files_exist)
    final = run_live(source, folder, "t", LIVE, clock=clock)
    assert source.closed
    assert len(seen) > 10  # the check ran while the stream grew
    check_named_files_exist()
    return final


def test_a_stall_becomes_gap_segments_and_the_timeline_keeps_pace(tmp_path: Path) -> None:
    """4 s of input, 5 s of nothing, 4 s more: the stall's whole parts are gaps that
    hold silence, the segments stay on the grid, and the input after it lands where
    the wall clock is."""
    clock = FakeClock()
    stall_reads = 16  # one per part: 5.12 s
    final = _run([*blocks(4.0), *[STALL] * stall_reads, *blocks(4.0)], tmp_path, clock)
    for r in final.renditions:
        assert [s for s in r.segments if s.gap], "a 5 s stall makes whole gap segments"
        gap_parts = [(s, p) for s in r.segments for p in s.parts if p.gap or s.gap]
        assert all(s.gap == all(p.gap for p in s.parts) for s in r.segments)
        # The grid is kept: every segment but the last is six parts, and contiguous.
        assert all(len(s.parts) == 6 for s in r.segments[:-1])
        for before, after in zip(r.segments, r.segments[1:], strict=False):
            assert after.start_ticks == before.start_ticks + before.duration_ticks
        gap_ticks = sum(p.duration_ticks for _, p in gap_parts)
        assert 4.5 * LIVE_RATE_HZ <= gap_ticks <= 5.2 * LIVE_RATE_HZ
        end = r.segments[-1].start_ticks + r.segments[-1].duration_ticks
        assert end >= (8 + 4.5) * LIVE_RATE_HZ  # media + the stall's time
        # The whole stream decodes, the stall's parts as silence, the media around it not.
        complete = [s for s in r.segments if s.complete]
        pcm = decode(stream_bytes(tmp_path / "t", r))
        assert pcm.shape[1] == sum(s.duration_ticks for s in complete)
        for s, p in gap_parts:
            if not s.complete:
                continue
            at = s.start_ticks + sum(x.duration_ticks for x in s.parts[: p.index])
            inner = pcm[:, at + 2048 : at + p.duration_ticks - 2048]  # codec edges aside
            assert float(np.abs(inner).max(initial=0.0)) < 1e-3, (s.number, p.index)
        assert float(np.abs(pcm[:, : 3 * LIVE_RATE_HZ]).max()) > 0.05
    # One segmentation for every rendition: they switch at the same boundaries.
    skeletons = {
        tuple((s.number, s.gap, s.start_ticks) for s in r.segments) for r in final.renditions
    }
    assert len(skeletons) == 1


def test_a_format_change_brings_a_new_init_and_a_discontinuity(tmp_path: Path) -> None:
    clock = FakeClock()
    script = [*blocks(3.0), FormatChange("input went from 44100 Hz stereo to 48000 Hz mono"),
              *blocks(3.0)]  # fmt: skip
    final = _run(script, tmp_path, clock)
    for r in final.renditions:
        inits = [s.init for s in r.segments]
        assert inits[0] == 0 and inits[-1] == 1
        (first_new,) = [s for s in r.segments if s.init == 1][:1]
        assert first_new.discontinuity
        assert first_new.start_ticks % PART_TICKS == 0
        assert first_new.start_ticks >= 3 * LIVE_RATE_HZ
        assert sum(s.discontinuity for s in r.segments) == 1
        assert (tmp_path / "t" / r.id / "init-1.mp4").is_file()
        assert r.init_name == "init-1.mp4"


def test_an_input_that_never_starts_fails_after_the_timeout(tmp_path: Path) -> None:
    clock = FakeClock()
    source = ScriptedSource([STALL] * 1000, clock)
    options = LiveOptions(LIVE_LADDER, start_timeout_s=3.0)
    with pytest.raises(InputError, match="no audio arrived within 3 s") as caught:
        run_live(source, tmp_path, "t", options, clock=clock, name="srt://nowhere")
    assert caught.value.path == "srt://nowhere"
    assert 3.0 <= clock() - 1_700_000_000.0 < 3.6
    assert not (tmp_path / "t").exists()


def test_max_duration_ends_the_stream(tmp_path: Path) -> None:
    clock = FakeClock()
    options = LiveOptions(LIVE_LADDER, max_duration_s=2.0)
    final = run_live(ScriptedSource(blocks(10.0), clock), tmp_path, "t", options, clock=clock)
    assert final.ended
    for r in final.renditions:
        total = sum(s.duration_ticks for s in r.segments)
        assert 0 <= total - 2 * LIVE_RATE_HZ < r.frame_ticks


def test_a_discontinuity_leaving_the_window_is_counted(tmp_path: Path) -> None:
    """RFC 8216bis 4.4.3.3: EXT-X-DISCONTINUITY-SEQUENCE counts the discontinuities
    removed with the window; the DASH Period of the window's first segment is kept."""
    clock = FakeClock()
    script = [*blocks(3.0), FormatChange("a change"), *blocks(9.0)]
    options = LiveOptions(LIVE_LADDER, window_s=3.0)
    final = run_live(ScriptedSource(script, clock), tmp_path, "t", options, clock=clock)
    for r in final.renditions:
        assert not any(s.discontinuity for s in r.segments)
        assert r.discontinuity_sequence == 1
        assert r.period_number > 1 and r.period_number <= r.segments[0].number
        assert not list((tmp_path / "t" / r.id).glob("seg-00001*"))


def test_a_burst_on_connect_dates_the_stream_from_its_real_start(tmp_path: Path) -> None:
    """A server hands over 2 s of audio at once on connect, then real time: tick 0 is
    dated 2 s before the burst arrived, so the program date-times are the audio's
    capture times, not 2 s ahead of them."""
    clock = FakeClock()
    burst = [Instant(b) for b in blocks(2.0)]
    later = blocks(3.0)
    final = run_live(ScriptedSource([*burst, *later], clock), tmp_path, "t", LIVE, clock=clock)
    assert final.availability_start_ms == round((EPOCH_S - 2.0) * 1000)


def test_a_real_time_input_is_dated_from_its_first_block(tmp_path: Path) -> None:
    clock = FakeClock()
    final = run_live(ScriptedSource(blocks(3.0), clock), tmp_path, "t", LIVE, clock=clock)
    # The first block's samples were captured during the block before it arrived.
    assert final.availability_start_ms == round(EPOCH_S * 1000)
