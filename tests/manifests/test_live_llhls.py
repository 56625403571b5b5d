"""LL-HLS playlists of a live stream, read back with the ``m3u8`` library (a parser we
did not write), and the window helpers the origin's blocking reload relies on."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import m3u8
import pytest
from hypothesis import given, settings

from cadenza.manifests.live import LivePresentation, LiveRendition
from cadenza.manifests.live_window import (
    has_position,
    last_position,
    next_part,
    split_periods,
    too_far_ahead,
    trim_window,
    window_start_number,
)
from cadenza.manifests.llhls import (
    GAP_DATERANGE_CLASS,
    program_date_time,
    render_live_master,
    render_live_media_playlist,
)
from tests.manifests.test_live_json import (
    START_MS,
    live_models,
    make_live,
    make_rendition,
)

NOW_MS = START_MS + 60_000


def _playlist(p: LivePresentation, rendition_id: str = "aac-64k", **kw: bool) -> m3u8.M3U8:
    return m3u8.loads(render_live_media_playlist(p, rendition_id, now_ms=NOW_MS, **kw))


def test_parts_hint_server_control_and_reports_read_back() -> None:
    p = make_live()
    playlist = _playlist(p)
    assert playlist.version == 9
    assert playlist.target_duration == 1
    assert playlist.media_sequence == 1
    control = playlist.server_control
    assert control.can_block_reload == "YES"
    # PART-TARGET is the longest part (12 frames of 1024 at 48 kHz) above the 0.25 s
    # target; PART-HOLD-BACK three of them, CAN-SKIP-UNTIL six target durations.
    assert playlist.part_inf.part_target == pytest.approx(0.256)
    assert control.part_hold_back == pytest.approx(0.768)
    assert control.can_skip_until == pytest.approx(6.0)
    # Nine complete segments, then the open one's two parts.
    assert [s.uri for s in playlist.segments[:9]] == [f"seg-{n:05d}.m4s" for n in range(1, 10)]
    assert all(s.duration == pytest.approx(1.024) for s in playlist.segments[:9])
    open_segment = playlist.segments[-1]
    assert open_segment.uri is None
    assert [part.uri for part in open_segment.parts] == ["seg-00010.p0.m4s", "seg-00010.p1.m4s"]
    assert all(part.independent == "YES" for part in open_segment.parts)
    assert playlist.preload_hint.hint_type == "PART"
    assert playlist.preload_hint.uri == "seg-00010.p2.m4s"
    [report] = playlist.rendition_reports
    assert (report.uri, report.last_msn, report.last_part) == ("../aac-128k/playlist.m3u8", 10, 1)
    assert playlist.segments[0].init_section.uri == "init-0.mp4"
    assert not playlist.is_endlist


def test_program_date_time_on_every_segment() -> None:
    p = make_live()
    text = render_live_media_playlist(p, "aac-64k", now_ms=NOW_MS)
    playlist = m3u8.loads(text)
    start = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=START_MS)
    for n, segment in enumerate(playlist.segments[:9]):
        assert segment.program_date_time == start + timedelta(milliseconds=1024 * n)
    # The open segment's date-time precedes its parts too (the library files it away).
    assert text.count("#EXT-X-PROGRAM-DATE-TIME:") == 10
    assert program_date_time(START_MS + 7) == "2025-12-06T05:46:40.007Z"


def test_parts_kept_only_within_three_target_durations() -> None:
    playlist = _playlist(make_live())
    with_parts = [s.uri for s in playlist.segments if s.parts]
    # The playlist ends at 9 x 1.024 + 0.512 s; segments 7 to 9 end less than 3 s before.
    assert with_parts == ["seg-00007.m4s", "seg-00008.m4s", "seg-00009.m4s", None]


def test_delta_update_skips_only_past_the_boundary() -> None:
    p = make_live(make_rendition(segments=20), make_rendition("aac-128k", segments=20))
    full = _playlist(p)
    delta = _playlist(p, skip=True)
    # End at 19 x 1.024 + 0.512 = 19.968 s; a segment is skipped when it ends 6 s before.
    skipped = delta.skip.skipped_segments
    assert skipped == 13
    assert delta.media_sequence == full.media_sequence == 1
    assert [s.uri for s in delta.segments] == [s.uri for s in full.segments[skipped:]]
    assert delta.segments[0].init_section.uri == "init-0.mp4"
    end = 19 * 1.024 + 0.512
    assert end - 13 * 1.024 >= 6.0 > end - 14 * 1.024
    assert delta.version == 9


def test_delta_update_with_fewer_segments_than_the_boundary_is_whole() -> None:
    p = make_live(make_rendition(segments=4), make_rendition("aac-128k", segments=4))
    text = render_live_media_playlist(p, "aac-64k", skip=True, now_ms=NOW_MS)
    assert "#EXT-X-SKIP" not in text
    assert text == render_live_media_playlist(p, "aac-64k", now_ms=NOW_MS)


def test_empty_window_before_the_first_part() -> None:
    empty = make_rendition(segments=0)
    p = make_live(empty, make_rendition("aac-128k", segments=0))
    playlist = _playlist(p)
    assert playlist.segments == []
    assert playlist.media_sequence == 1
    assert playlist.preload_hint.uri == "seg-00001.p0.m4s"
    assert playlist.rendition_reports == []
    assert last_position(empty) is None
    assert not has_position(empty, 1, 0)
    assert next_part(empty) == (1, 0)


def test_open_segment_without_parts_hints_its_first() -> None:
    p = make_live(make_rendition(open_parts=0), make_rendition("aac-128k", open_parts=0))
    playlist = _playlist(p)
    assert playlist.preload_hint.uri == "seg-00010.p0.m4s"
    assert playlist.rendition_reports[0].last_msn == 9
    assert playlist.rendition_reports[0].last_part == 3


def test_the_stalls_silence_is_listed_as_media_and_dated() -> None:
    """A gap segment holds encoded silence: listed with its parts like any segment (no
    EXT-X-GAP or GAP=YES, which would tell a player not to load it), and its run of
    gap parts is an EXT-X-DATERANGE."""
    p = make_live(make_rendition(gaps={8}), make_rendition("aac-128k", gaps={8}))
    playlist = _playlist(p)
    gap = next(s for s in playlist.segments if s.uri == "seg-00008.m4s")
    assert not gap.gap_tag
    assert [part.gap for part in gap.parts] == [None] * 4
    assert [d.class_ for d in _dateranges(playlist)] == [GAP_DATERANGE_CLASS]


def test_discontinuity_new_map_and_sequence() -> None:
    rendition = make_rendition(discontinuities={6})
    p = make_live(rendition, make_rendition("aac-128k", discontinuities={6}))
    playlist = _playlist(p)
    after = next(s for s in playlist.segments if s.uri == "seg-00006.m4s")
    assert after.discontinuity
    assert after.init_section.uri == "init-1.mp4"
    assert playlist.discontinuity_sequence == 0
    text = render_live_media_playlist(p, "aac-64k", now_ms=NOW_MS)
    assert text.count("#EXT-X-MAP:") == 2
    assert text.index("#EXT-X-DISCONTINUITY\n") < text.index('#EXT-X-MAP:URI="init-1.mp4"')
    # Once segment 6 leaves the window, its discontinuity is counted in the sequence.
    trimmed = trim_window(rendition, 7)
    assert trimmed.discontinuity_sequence == 1
    assert trimmed.segments[0].number == 7
    later = _playlist(make_live(trimmed, trim_window(p.renditions[1], 7)))
    assert later.discontinuity_sequence == 1
    assert later.media_sequence == 7
    assert later.segments[0].init_section.uri == "init-1.mp4"


def test_ended_stream_has_endlist_and_no_hint() -> None:
    p = make_live(
        make_rendition(open_parts=None), make_rendition("aac-128k", open_parts=None), ended=True
    )
    playlist = _playlist(p)
    assert playlist.is_endlist
    assert playlist.preload_hint is None
    assert all(s.uri for s in playlist.segments)


def test_master_lists_one_variant_per_rendition_of_one_channel_count() -> None:
    p = make_live(
        make_rendition("aac-64k"),
        make_rendition("aac-128k"),
        make_rendition("aac-256k-51", channels=6),
    )
    master = m3u8.loads(render_live_master(p))
    assert [v.uri for v in master.playlists] == ["aac-64k/playlist.m3u8", "aac-128k/playlist.m3u8"]
    info = master.playlists[0].stream_info
    assert info.codecs == "mp4a.40.2"
    # 2000 bytes per 0.256 s part: 62.5 kbit/s on average, under the 64 kbit/s target.
    assert info.bandwidth == 64_000
    assert info.average_bandwidth == 62_500
    # A 5.1 rendition is not reported to a stereo playlist's player.
    playlist = _playlist(p)
    assert [r.uri for r in playlist.rendition_reports] == ["../aac-128k/playlist.m3u8"]


def test_last_and_has_position() -> None:
    r = make_rendition()  # segments 1..9 complete, 10 open with parts 0 and 1
    assert last_position(r) == (10, 1)
    assert has_position(r, 9)
    assert has_position(r, 9, 3)
    assert has_position(r, 9, 7)  # a part past segment 9's end: segment 10 exists
    assert has_position(r, 10, 1)
    assert not has_position(r, 10, 2)
    assert not has_position(r, 10)  # segment 10 is not complete
    assert not has_position(r, 11, 0)
    assert has_position(r, 1)
    assert has_position(trim_window(r, 5), 2)  # older than the window
    complete = make_rendition(open_parts=None)
    assert last_position(complete) == (10, 3)
    assert has_position(complete, 10)
    assert not has_position(complete, 11, 0)
    assert next_part(complete) == (11, 0)


def test_too_far_ahead() -> None:
    r = make_rendition()
    assert not too_far_ahead(r, 12)
    assert too_far_ahead(r, 13)
    assert not too_far_ahead(make_rendition(segments=0), 2)


def test_window_start_and_trim_keep_periods() -> None:
    r = make_rendition(segments=12, gaps={4}, discontinuities={8})
    # 4 s of window: the newest segment is half written, so five segments cover it.
    assert window_start_number(r, 4_000_000) == 8
    before = {run.number: run.start_ticks for run in split_periods(r)}
    assert list(before) == [1, 8]  # a discontinuity begins a Period; a gap does not
    for first in range(1, 13):
        trimmed = trim_window(r, first)
        after = split_periods(trimmed)
        for run in after:
            assert before[run.number] == run.start_ticks
        assert trimmed.discontinuity_sequence == (1 if first > 8 else 0)


@settings(max_examples=60, deadline=None)
@given(live_models())
def test_any_model_renders_a_playlist_the_library_reads(p: LivePresentation) -> None:
    for rendition in p.renditions:
        for skip in (False, True):
            playlist = _playlist(p, rendition.id, skip=skip)
            complete = [s for s in rendition.segments if s.complete]
            skipped = playlist.skip.skipped_segments or 0 if playlist.skip else 0
            listed = [s for s in playlist.segments if s.uri]
            assert [s.uri for s in listed] == [s.name for s in complete][skipped:]
            for entry, segment in zip(listed, complete[skipped:], strict=True):
                expected = Fraction(segment.duration_ticks, rendition.timescale)
                assert entry.duration == pytest.approx(float(expected), abs=1e-6)
                assert round(entry.duration) <= playlist.target_duration
                assert not entry.gap_tag  # silence, not a missing segment
            assert playlist.is_endlist == p.ended
            assert (playlist.preload_hint is None) == p.ended
            parts = [part for s in playlist.segments for part in s.parts]
            assert all(part.duration <= playlist.part_inf.part_target for part in parts)
            assert playlist.media_sequence == (
                rendition.segments[0].number if rendition.segments else 1
            )


def test_unknown_rendition_raises_key_error() -> None:
    with pytest.raises(KeyError):
        render_live_media_playlist(make_live(), "nope", now_ms=NOW_MS)


def test_presentation_updates_render_deterministically() -> None:
    p = make_live()
    assert render_live_media_playlist(p, "aac-64k", now_ms=1) == render_live_media_playlist(
        replace(p), "aac-64k", now_ms=2
    )


def _stalled(segments: int, gap_parts: dict[int, set[int]]) -> LiveRendition:
    """A rendition whose segment n has the parts ``gap_parts[n]`` marked gap."""
    r = make_rendition(segments=segments)
    marked = []
    for s in r.segments:
        gaps = gap_parts.get(s.number, set())
        parts = tuple(replace(x, gap=x.index in gaps) for x in s.parts)
        marked.append(replace(s, parts=parts, gap=bool(parts) and all(x.gap for x in parts)))
    return replace(r, segments=tuple(marked))


def _dateranges(playlist: m3u8.M3U8) -> list[m3u8.model.DateRange]:
    """The library files a date range under the segment (or part) it precedes."""
    found = [d for s in playlist.segments for d in s.dateranges]
    found += [d for s in playlist.segments for p in s.parts for d in p.dateranges]
    return found


def test_each_run_of_gap_parts_is_a_date_range() -> None:
    """A 2-part gap inside segment 3 and one across segments 5-6: one EXT-X-DATERANGE
    each, dated by the wall clock, kept in a delta update that skips their segments."""
    r = _stalled(10, {3: {1, 2}, 5: {2, 3}, 6: {0, 1, 2, 3}})
    p = make_live(r, replace(r, id="aac-128k"))
    part_s = 12288 / 48000
    for skip in (False, True):
        playlist = _playlist(p, skip=skip)
        ranges = [(d.id, d.class_, d.start_date, d.duration) for d in _dateranges(playlist)]
        assert ranges == [
            # Segment 3 starts at 2 x 4 x 12288 ticks, its part 1 one part later.
            ("gap-110592", GAP_DATERANGE_CLASS, "2025-12-06T05:46:42.304Z", 2 * part_s),
            ("gap-221184", GAP_DATERANGE_CLASS, "2025-12-06T05:46:44.608Z", 6 * part_s),
        ]


def test_a_gap_still_growing_has_no_duration_yet() -> None:
    r = _stalled(10, {9: {2, 3}, 10: {0, 1}})  # segment 10 is the open one
    playlist = _playlist(make_live(r, replace(r, id="aac-128k")))
    [growing] = _dateranges(playlist)
    assert growing.duration is None
    ended = make_live(
        replace(r, segments=(*r.segments[:-1], replace(r.segments[-1], complete=True))),
        ended=True,
    )
    [closed] = _dateranges(_playlist(ended))
    assert closed.duration == pytest.approx(4 * 12288 / 48000)
