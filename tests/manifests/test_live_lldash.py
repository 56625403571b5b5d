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
from cadenza.manifests.lldash import UTC_TIMING_SCHEME, latency_ms, render_live_mpd
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
    text = render_live_mpd(p, now_ms=p.updated_ms + 500, time_url=TIME_URL)
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
    # Nine complete segments and the open one, at the duration of the last complete.
    assert _timeline(template) == [(n * 49152, 49152) for n in range(10)]


def test_latency_follows_the_part_target() -> None:
    assert latency_ms(make_live()) == (1000, 500, 3000)
    slow = replace(make_live(), part_target_us=500_000)
    assert latency_ms(slow) == (1500, 750, 4500)


def test_gap_is_left_out_and_begins_a_new_period() -> None:
    p = make_live(make_rendition(gaps={4, 5}), make_rendition("aac-128k", gaps={4, 5}))
    mpd = _mpd(p)
    periods = mpd.findall("d:Period", N)
    assert [(x.get("id"), x.get("start")) for x in periods] == [
        ("1", "PT0.000000S"),
        ("6", "PT5.120000S"),
    ]
    first, second = (_one(x, ".//d:SegmentTemplate") for x in periods)
    assert _timeline(first) == [(n * 49152, 49152) for n in range(3)]
    assert second.get("startNumber") == "6"
    assert second.get("presentationTimeOffset") == str(5 * 49152)
    assert _timeline(second) == [(n * 49152, 49152) for n in range(5, 10)]


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
        start = int(_attr(template, "startNumber"))
        spans = _timeline(template)
        listed.extend(range(start, start + len(spans)))
        by_number = {s.number: s for s in reference.segments}
        for number, (t, _) in zip(range(start, start + len(spans)), spans, strict=True):
            assert by_number[number].start_ticks == t
            assert not by_number[number].gap
    expected = [s.number for s in reference.segments if not s.gap]
    assert listed == expected
    assert mpd.get("type") == ("static" if p.ended else "dynamic")
