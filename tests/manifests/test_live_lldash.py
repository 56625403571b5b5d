"""The live MPD: validated against the official DASH schema, and its structure read
back with lxml (periods, timeline, low-latency attributes, service description)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hypothesis import given, settings
from lxml import etree

from cadenza.manifests.dash import NS
from cadenza.manifests.live import LivePresentation
from cadenza.manifests.live_window import trim_window
from cadenza.manifests.lldash import (
    GAP_EVENT_SCHEME,
    UTC_TIMING_SCHEME,
    latency_ms,
    render_live_mpd,
)
from cadenza.manifests.steering import Pathway, SteeringConfig
from tests.manifests.test_live_json import live_models, make_live, make_rendition

SCHEMA = etree.XMLSchema(
    etree.parse(str(Path(__file__).resolve().parent.parent / "data" / "schemas" / "DASH-MPD.xsd"))
)
N = {"d": NS}
TIME_URL = "https://origin.example/time"


def _one(parent: etree._Element, path: str) -> etree._Element:
    found = parent.find(path, N)
    assert found is not None, path
    return found


def _attr(element: etree._Element, name: str) -> str:
    value = element.get(name)
    assert value is not None, name
    return value


def _mpd(p: LivePresentation) -> etree._Element:
    text = render_live_mpd(p, time_url=TIME_URL)
    root = etree.fromstring(text.encode())
    SCHEMA.assertValid(root)
    return root


def _timeline(template: etree._Element) -> list[tuple[int, int]]:
    """(t, d) of every segment the SegmentTimeline describes."""
    spans: list[tuple[int, int]] = []
    for s in template.findall("d:SegmentTimeline/d:S", N):
        t = s.get("t")
        start = int(t) if t is not None else spans[-1][0] + spans[-1][1]
        duration = int(_attr(s, "d"))
        for _ in range(int(s.get("r", "0")) + 1):
            spans.append((start, duration))
            start += duration
    return spans


def _starts(template: etree._Element, numbers: list[int]) -> dict[int, int]:
    """Each of ``numbers``' media start as the template addresses it: from the
    SegmentTimeline when there is one (numbers from startNumber), else from
    ``@duration`` (5.3.9.5.3: presentationTimeOffset + (n - startNumber) x duration)."""
    first = int(_attr(template, "startNumber"))
    if template.find("d:SegmentTimeline", N) is not None:
        spans = _timeline(template)
        return {first + i: t for i, (t, _) in enumerate(spans)}
    offset = int(template.get("presentationTimeOffset", "0"))
    duration = int(_attr(template, "duration"))
    return {n: offset + (n - first) * duration for n in numbers if n >= first}


def test_dynamic_mpd_low_latency_attributes() -> None:
    p = make_live()
    mpd = _mpd(p)
    assert mpd.get("type") == "dynamic"
    assert mpd.get("availabilityStartTime") == "2025-12-06T05:46:40.000Z"
    assert mpd.get("publishTime") == "2025-12-06T05:46:50.000Z"
    assert mpd.get("timeShiftBufferDepth") == "PT30.000000S"
    assert mpd.get("minimumUpdatePeriod") == "PT0.250000S"  # a part: the open segment's news
    assert mpd.get("suggestedPresentationDelay") == "PT1.000000S"
    latency = _one(mpd, "d:ServiceDescription/d:Latency")
    assert (latency.get("target"), latency.get("min"), latency.get("max")) == (
        "1000",
        "500",
        "3000",
    )
    rate = _one(mpd, "d:ServiceDescription/d:PlaybackRate")
    assert float(_attr(rate, "min")) < 1 < float(_attr(rate, "max"))
    timing = _one(mpd, "d:UTCTiming")
    assert (timing.get("schemeIdUri"), timing.get("value")) == (UTC_TIMING_SCHEME, TIME_URL)
    [period] = mpd.findall("d:Period", N)
    assert (period.get("id"), period.get("start")) == ("1", "PT0.000000S")
    [adaptation] = period.findall("d:AdaptationSet", N)
    reps = adaptation.findall("d:Representation", N)
    assert [r.get("id") for r in reps] == ["aac-64k", "aac-128k"]
    template = _one(reps[0], "d:SegmentTemplate")
    assert reps[0].findtext("d:BaseURL", namespaces=N) == "aac-64k/"
    assert template.get("media") == "seg-$Number%05d$.m4s"
    assert template.get("initialization") == "init-0.mp4"
    assert template.get("startNumber") == "1"
    assert float(_attr(template, "availabilityTimeOffset")) == 0.75  # 1 s segment - 0.25 s part
    assert template.get("availabilityTimeComplete") == "false"
    # The open Period's segments are all on one grid: numbered by @duration, so a player
    # computes the next one from the clock rather than waiting for an MPD listing it.
    assert template.find("d:SegmentTimeline", N) is None
    assert template.get("duration") == "49152"
    assert template.get("presentationTimeOffset") == "0"


def test_open_period_numbers_from_its_first_segment_after_the_window_moved() -> None:
    r = trim_window(make_rendition(segments=14), 6)
    template = _one(_mpd(make_live(r)), ".//d:SegmentTemplate")
    assert (template.get("startNumber"), template.get("duration")) == ("1", "49152")
    numbers = [s.number for s in r.segments]
    assert numbers[0] == 6
    assert _starts(template, numbers) == {s.number: s.start_ticks for s in r.segments}


def test_a_segment_off_the_grid_falls_back_to_a_timeline() -> None:
    r = make_rendition(segments=6)
    short = replace(r.segments[2], parts=r.segments[2].parts[:3])  # cut short, complete
    later = tuple(
        replace(s, start_ticks=s.start_ticks - r.segments[2].parts[3].duration_ticks)
        for s in r.segments[3:]
    )
    r = replace(r, segments=(*r.segments[:2], short, *later))
    template = _one(_mpd(make_live(r)), ".//d:SegmentTemplate")
    assert template.get("duration") is None
    assert _starts(template, []) == {s.number: s.start_ticks for s in r.segments}


def test_latency_follows_the_part_target() -> None:
    assert latency_ms(make_live()) == (1000, 500, 3000)
    slow = replace(make_live(), part_target_us=500_000)
    assert latency_ms(slow) == (1500, 750, 4500)


def test_a_stall_keeps_the_period_and_is_marked_by_events() -> None:
    """Segments 4 and 5 and two parts of 6 are the stalled input's silence: still
    numbered by @duration in the one Period (a player plays through them), and marked
    by one Event covering them."""
    r = make_rendition(gaps={4, 5})
    six = r.segments[5]
    six = replace(six, parts=tuple(replace(x, gap=x.index < 2) for x in six.parts))
    r = replace(r, segments=(*r.segments[:5], six, *r.segments[6:]))
    mpd = _mpd(make_live(r, replace(r, id="aac-128k")))
    [period] = mpd.findall("d:Period", N)
    template = _one(period, ".//d:SegmentTemplate")
    assert (template.get("startNumber"), template.get("duration")) == ("1", "49152")
    assert _starts(template, list(range(1, 11))) == {n: (n - 1) * 49152 for n in range(1, 11)}
    stream = _one(period, "d:EventStream")
    assert stream.get("schemeIdUri") == GAP_EVENT_SCHEME
    assert stream.get("timescale") == "48000"
    events = [
        (int(_attr(e, "presentationTime")), int(_attr(e, "duration")))
        for e in stream.findall("d:Event", N)
    ]
    assert events == [(3 * 49152, 2 * 49152 + 2 * 12288)]


def test_no_gap_no_event_stream() -> None:
    assert _mpd(make_live()).find("d:Period/d:EventStream", N) is None


def test_a_discontinuity_that_cuts_a_segment_short_keeps_numbering_by_duration() -> None:
    r = make_rendition(segments=8, discontinuities={5})
    short = replace(r.segments[3], parts=r.segments[3].parts[:2])
    cut = r.segments[3].parts[2].duration_ticks * 2
    later = tuple(replace(s, start_ticks=s.start_ticks - cut) for s in r.segments[4:])
    r = replace(r, segments=(*r.segments[:3], short, *later))
    periods = _mpd(make_live(r)).findall("d:Period", N)
    assert [x.get("id") for x in periods] == ["1", "5"]
    first, second = (_one(x, ".//d:SegmentTemplate") for x in periods)
    # A closed Period's last segment may be short: the next Period's start ends it.
    assert first.get("duration") == "49152"
    assert second.get("presentationTimeOffset") == str(short.start_ticks + short.duration_ticks)
    assert _starts(second, [5, 6, 7, 8]) == {s.number: s.start_ticks for s in later}


def test_an_ended_stream_lists_its_segments_in_a_timeline() -> None:
    r = make_rendition(open_parts=None, gaps={3})
    template = _one(_mpd(make_live(r, ended=True)), "d:Period/.//d:SegmentTemplate")
    assert template.get("duration") is None
    assert _timeline(template)[:3] == [(n * 49152, 49152) for n in range(3)]


def test_discontinuity_begins_a_period_with_its_init() -> None:
    p = make_live(
        make_rendition(discontinuities={7}), make_rendition("aac-128k", discontinuities={7})
    )
    periods = _mpd(p).findall("d:Period", N)
    assert [x.get("id") for x in periods] == ["1", "7"]
    templates = [_one(x, ".//d:SegmentTemplate") for x in periods]
    assert [t.get("initialization") for t in templates] == ["init-0.mp4", "init-1.mp4"]
    assert [t.get("startNumber") for t in templates] == ["1", "7"]


def test_period_id_and_start_stay_as_the_window_moves() -> None:
    r = make_rendition(segments=14, discontinuities={7})
    seen: dict[str, str] = {}
    for first in range(1, 14):
        trimmed = trim_window(r, first)
        for period in _mpd(make_live(trimmed)).findall("d:Period", N):
            assert seen.setdefault(_attr(period, "id"), _attr(period, "start")) == period.get(
                "start"
            )
    assert seen == {"1": "PT0.000000S", "7": "PT6.144000S"}


def test_ended_stream_is_static() -> None:
    p = make_live(
        make_rendition(open_parts=None), make_rendition("aac-128k", open_parts=None), ended=True
    )
    mpd = _mpd(p)
    assert mpd.get("type") == "static"
    assert mpd.get("mediaPresentationDuration") == "PT10.240000S"
    assert mpd.get("minimumUpdatePeriod") is None
    assert mpd.find("d:UTCTiming", N) is None
    template = _one(mpd, ".//d:SegmentTemplate")
    assert template.get("availabilityTimeOffset") is None
    assert len(_timeline(template)) == 10


def test_empty_window_is_one_period_without_segments() -> None:
    p = make_live(make_rendition(segments=0), make_rendition("aac-128k", segments=0))
    mpd = _mpd(p)
    [period] = mpd.findall("d:Period", N)
    template = _one(period, ".//d:SegmentTemplate")
    assert template.get("startNumber") == "1"
    assert _timeline(template) == []


def test_one_adaptation_set_per_codec_and_channel_count() -> None:
    p = make_live(
        make_rendition("aac-64k"),
        make_rendition("opus-96k", codec="opus"),
        make_rendition("aac-256k-51", channels=6),
    )
    sets = _mpd(p).findall("d:Period/d:AdaptationSet", N)
    assert [[r.get("id") for r in s.findall("d:Representation", N)] for s in sets] == [
        ["aac-256k-51"],
        ["aac-64k"],
        ["opus-96k"],
    ]
    assert [s.findtext("d:Label", namespaces=N) for s in sets] == ["5.1", "Stereo", "Stereo"]


@settings(max_examples=60, deadline=None)
@given(live_models())
def test_any_model_renders_a_valid_mpd(p: LivePresentation) -> None:
    mpd = _mpd(p)
    reference = p.renditions[0]
    listed: list[int] = []
    for period in mpd.findall("d:Period", N):
        template = _one(period, ".//d:Representation/d:SegmentTemplate")
        by_number = {s.number: s for s in reference.segments}
        following = period.getnext()
        end = (
            int(_attr(following, "id"))
            if following is not None and following.tag == period.tag
            else None
        )
        if template.find("d:SegmentTimeline", N) is None:  # numbered by @duration
            assert not p.ended
            numbers = [
                n for n in by_number if n >= int(_attr(period, "id")) and (end is None or n < end)
            ]
        else:
            numbers = sorted(_starts(template, []))
        starts = _starts(template, numbers)
        listed.extend(numbers)
        for number in numbers:
            assert by_number[number].start_ticks == starts[number]
    # Every segment of the window is addressed once, gaps included (they hold silence).
    assert listed == [s.number for s in reference.segments]
    assert mpd.get("type") == ("static" if p.ended else "dynamic")


def test_a_gap_at_the_live_edge_has_an_event_without_duration() -> None:
    r = make_rendition()
    last = r.segments[-1]  # the open segment: both its parts so far are the stall's
    stalled = replace(last, parts=tuple(replace(x, gap=True) for x in last.parts), gap=True)
    r = replace(r, segments=(*r.segments[:-1], stalled))
    [event] = _mpd(make_live(r, replace(r, id="aac-128k"))).findall(
        "d:Period/d:EventStream/d:Event", N
    )
    assert event.get("presentationTime") == str(stalled.start_ticks)
    assert event.get("duration") is None  # still growing: no duration to take back


def test_steered_live_mpd_is_valid_with_a_base_url_per_pathway() -> None:
    steering = SteeringConfig(
        "https://steer.example/v1/steering/radio?protocol=dash",
        (Pathway("cdn-a", "https://a.example"), Pathway("cdn-b", "https://b.example")),
        "cdn-b",
    )
    for ended in (False, True):
        p = make_live(ended=ended)
        text = render_live_mpd(p, time_url=TIME_URL, steering=steering)
        mpd = etree.fromstring(text.encode())
        SCHEMA.assertValid(mpd)
        bases = [(b.get("serviceLocation"), b.text) for b in mpd.findall("d:BaseURL", N)]
        assert bases == [
            ("cdn-a", "https://a.example/radio/"),
            ("cdn-b", "https://b.example/radio/"),
        ]
        element = _one(mpd, "d:ContentSteering")
        assert element.get("defaultServiceLocation") == "cdn-b"
        assert element.text == steering.server_uri


def test_producer_reference_time_restates_the_wall_clock_of_each_period() -> None:
    r = make_rendition(discontinuities={7})
    mpd = _mpd(make_live(r, replace(r, id="aac-128k")))
    found = [
        (_attr(x, "id"), _attr(prt, "wallClockTime"), _attr(prt, "presentationTime"))
        for x in mpd.findall("d:Period", N)
        for prt in x.findall("d:AdaptationSet/d:ProducerReferenceTime", N)
    ]
    start = 6 * 49152  # segment 7 starts after six of 1.024 s
    assert found == [
        ("1", "2025-12-06T05:46:40.000Z", "0"),
        ("7", "2025-12-06T05:46:46.144Z", str(start)),
    ]
    ended = make_live(make_rendition(open_parts=None), ended=True)
    assert _mpd(ended).find(".//d:ProducerReferenceTime", N) is None
