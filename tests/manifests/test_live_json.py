"""``live.json``: the live model round-trips, and reading refuses a bad document naming
the field at fault.  Also holds the live model builders the other live tests use."""

from __future__ import annotations

import json
from collections.abc import Collection

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cadenza.manifests.errors import InvalidLiveStateError
from cadenza.manifests.live import LivePart, LivePresentation, LiveRendition, LiveSegment
from cadenza.manifests.live_json import live_from_dict, live_from_json, live_to_dict, live_to_json

START_MS = 1_765_000_000_000
FRAME = 1024
FRAMES_PER_PART = 12  # 0.256 s at 48 kHz: a whole number of frames over the 0.25 s target


def make_rendition(
    rendition_id: str = "aac-64k",
    *,
    segments: int = 10,
    open_parts: int | None = 2,
    parts_per_segment: int = 4,
    first: int = 1,
    gaps: Collection[int] = (),
    discontinuities: Collection[int] = (),
    rate: int = 48000,
    channels: int = 2,
    codec: str = "aac",
) -> LiveRendition:
    """``segments`` segments numbered from ``first``; the last one open with
    ``open_parts`` parts (None: complete); a new init segment after each discontinuity."""
    part_ticks = FRAMES_PER_PART * FRAME
    built = []
    for i in range(segments):
        number = first + i
        is_open = i == segments - 1 and open_parts is not None
        count = open_parts if is_open and open_parts is not None else parts_per_segment
        gap = number in gaps
        size = 300 if gap else 2_000  # a gap holds encoded silence
        built.append(
            LiveSegment(
                number=number,
                start_ticks=(number - 1) * parts_per_segment * part_ticks,
                parts=tuple(LivePart(k, part_ticks, size, gap=gap) for k in range(count)),
                complete=not is_open,
                init=sum(1 for d in discontinuities if d <= number),
                gap=gap,
                discontinuity=number in discontinuities,
            )
        )
    return LiveRendition(
        id=rendition_id,
        codec=codec,
        codecs={"aac": "mp4a.40.2", "opus": "opus", "flac": "fLaC"}[codec],
        sample_rate_hz=rate,
        channels=channels,
        timescale=rate,
        bitrate_bps=64_000,
        frame_ticks=FRAME,
        segments=tuple(built),
        period_number=first,
        period_start_ticks=(first - 1) * parts_per_segment * part_ticks,
    )


def make_live(
    *renditions: LiveRendition, ended: bool = False, window_s: int = 30
) -> LivePresentation:
    if not renditions:
        renditions = (make_rendition("aac-64k"), make_rendition("aac-128k"))
    return LivePresentation(
        track_id="radio",
        renditions=renditions,
        availability_start_ms=START_MS,
        part_target_us=250_000,
        segment_target_us=1_000_000,
        window_us=window_s * 1_000_000,
        updated_ms=START_MS + 10_000,
        ended=ended,
    )


def test_round_trip_keeps_every_field() -> None:
    p = make_live(
        make_rendition("aac-64k", gaps={3}, discontinuities={5}),
        make_rendition("opus-96k", codec="opus", channels=6, open_parts=None),
        ended=True,
    )
    text = live_to_json(p)
    assert live_from_json(text) == p
    assert live_from_json(text.encode()) == p
    assert text.endswith("\n") and "\n" not in text[:-1]  # one compact line


def test_window_fields_default_when_absent() -> None:
    doc = live_to_dict(make_live())
    for rendition in doc["renditions"]:  # type: ignore[attr-defined]
        del rendition["discontinuity_sequence"]
        del rendition["period_number"]
        del rendition["period_start_ticks"]
    back = live_from_dict(doc)
    assert back.renditions[0].discontinuity_sequence == 0
    assert back.renditions[0].period_number == 1


def _doc() -> dict[str, object]:
    return json.loads(live_to_json(make_live()))  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("ended",), None, "ended"),
        (("ended",), "yes", "ended"),
        (("part_target_us",), 0, "part_target_us"),
        (("version",), 2, "version"),
        (("track_id",), "", "track_id"),
        (("renditions",), [], "renditions"),
        (("renditions", 0, "codec"), "mp3", "renditions[0].codec"),
        (("renditions", 1, "timescale"), 1.5, "renditions[1].timescale"),
        (("renditions", 0, "segments", 2, "number"), 7, "renditions[0].segments[2].number"),
        (("renditions", 0, "segments", 1, "complete"), False, "renditions[0].segments[1].complete"),
        (("renditions", 0, "segments", 4, "gap"), 1, "renditions[0].segments[4].gap"),
        (
            ("renditions", 0, "segments", 0, "parts", 1, "index"),
            3,
            "renditions[0].segments[0].parts[1].index",
        ),
        (
            ("renditions", 0, "segments", 0, "parts", 1, "size_bytes"),
            -1,
            "renditions[0].segments[0].parts[1].size_bytes",
        ),
        (
            ("renditions", 0, "segments", 0, "parts", 0, "duration_ticks"),
            True,
            "renditions[0].segments[0].parts[0].duration_ticks",
        ),
    ],
)
def test_bad_field_is_named(path: tuple[str | int, ...], value: object, field: str) -> None:
    doc = _doc()
    node: object = doc
    for key in path[:-1]:
        node = node[key]  # type: ignore[index]
    node[path[-1]] = value  # type: ignore[index]
    with pytest.raises(InvalidLiveStateError) as caught:
        live_from_dict(doc)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"invalid live state: {field}: ")


def test_missing_field_is_named() -> None:
    doc = _doc()
    del doc["renditions"][0]["segments"][0]["init"]  # type: ignore[index]
    with pytest.raises(InvalidLiveStateError) as caught:
        live_from_dict(doc)
    assert (caught.value.field, caught.value.reason) == (
        "renditions[0].segments[0].init",
        "missing",
    )


def test_duplicate_rendition_ids_and_bad_json_are_refused() -> None:
    doc = _doc()
    doc["renditions"][1]["id"] = "aac-64k"  # type: ignore[index]
    with pytest.raises(InvalidLiveStateError, match="duplicate"):
        live_from_dict(doc)
    with pytest.raises(InvalidLiveStateError) as caught:
        live_from_json("{not json")
    assert caught.value.field == "document"
    with pytest.raises(InvalidLiveStateError) as caught:
        live_from_json("[]")
    assert caught.value.field == "document"


@st.composite
def live_models(draw: st.DrawFn) -> LivePresentation:
    count = draw(st.integers(0, 12))
    first = draw(st.integers(1, 5000))
    numbers = range(first, first + count)
    gaps = draw(st.sets(st.sampled_from(numbers))) if count else set()
    discontinuities = draw(st.sets(st.sampled_from(numbers))) if count else set()
    open_parts = draw(st.one_of(st.none(), st.integers(0, 4)))
    renditions = [
        make_rendition(
            f"r{i}",
            segments=count,
            first=first,
            gaps=gaps,
            discontinuities=discontinuities,
            open_parts=open_parts,
            rate=draw(st.sampled_from([44100, 48000])),
            channels=draw(st.sampled_from([1, 2, 6])),
            codec=draw(st.sampled_from(["aac", "opus", "flac"])),
        )
        for i in range(draw(st.integers(1, 3)))
    ]
    return make_live(*renditions, ended=draw(st.booleans()))


@settings(max_examples=60, deadline=None)
@given(live_models())
def test_any_model_round_trips(p: LivePresentation) -> None:
    assert live_from_json(live_to_json(p)) == p
