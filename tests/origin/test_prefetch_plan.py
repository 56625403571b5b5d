"""Prefetch's pure decisions (``origin.prefetch.plan``), its ledger of warmed
objects and the memory transition store."""

from __future__ import annotations

from pathlib import Path

import pytest

from cadenza.manifests.jsonio import presentation_from_json
from cadenza.manifests.model import Presentation
from cadenza.origin.prefetch.ledger import Settled, WarmLedger
from cadenza.origin.prefetch.plan import (
    Prediction,
    PredictionSource,
    in_last_segments,
    is_track_id,
    likely_rendition,
    near_end,
    predict_next,
    queue_next,
    resolve_nor,
    segment_position,
    warm_keys,
)
from cadenza.origin.prefetch.transitions import MemoryTransitionStore

KEY = "a/aac-128k/seg-00001.m4s"


@pytest.fixture(scope="module")
def model(packaged_root: Path) -> Presentation:
    return presentation_from_json((packaged_root / "track" / "presentation.json").read_bytes())


@pytest.mark.parametrize(
    ("nor", "expected"),
    [
        ("seg-00002.m4s", "a/aac-128k/seg-00002.m4s"),
        ("../aac-64k/seg-00002.m4s", "a/aac-64k/seg-00002.m4s"),
        ("..%2Faac-64k%2Finit.mp4", "a/aac-64k/init.mp4"),  # CTA-5004: URL-encoded
        ("/a/opus-64k/seg-00003.m4s", "a/opus-64k/seg-00003.m4s"),
        ("playlist.m3u8", "a/aac-128k/playlist.m3u8"),
        ("seg-00002.m4s?x=1", "a/aac-128k/seg-00002.m4s"),
        ("../../b/aac-128k/seg-00001.m4s", None),
        ("/b/aac-128k/seg-00001.m4s", None),
        ("https://cdn.example/a/aac-128k/seg-00002.m4s", None),
        ("//cdn.example/a/aac-128k/seg-00002.m4s", None),
        ("../../../etc/passwd", None),
        ("../.git/config.m4s", None),
        ("seg 2.m4s", None),
        ("presentation.json", None),
        ("../../a", None),
        ("", None),
        ("x" * 600, None),
    ],
)
def test_nor_resolves_only_inside_the_track_folder(nor: str, expected: str | None) -> None:
    assert resolve_nor(nor, KEY) == expected


def test_track_ids_follow_the_path_rules() -> None:
    assert is_track_id("album-1_track.07")
    for bad in ("", ".x", "a/b", "..", "a b", "%41", "é", "x" * 129):
        assert not is_track_id(bad), bad


def test_the_queue_names_the_track_after_the_current_one() -> None:
    assert queue_next("a", ("a", "b", "c")) == "b"
    assert queue_next("b", ("a", "b", "c")) == "c"
    assert queue_next("c", ("a", "b", "c")) is None
    assert queue_next("x", ("a", "b")) == "a"  # not in it: the queue is what comes next
    assert queue_next("a", ("a", "a", "b")) == "b"
    assert queue_next("a", ()) is None


def test_a_stated_queue_outranks_learned_transitions() -> None:
    found = predict_next(
        "a",
        ("a", "q"),
        [("b", 6), ("c", 3), ("d", 1), ("q", 10)],
        min_probability=0.3,
        max_tracks=2,
    )
    assert found == (
        Prediction("q", 1.0, PredictionSource.QUEUE),
        Prediction("b", 0.3, PredictionSource.LEARNED),
    )


def test_learned_predictions_keep_to_the_threshold_and_the_limit() -> None:
    successors = [("b", 5), ("c", 4), ("d", 1)]
    found = predict_next("a", (), successors, min_probability=0.3, max_tracks=5)
    assert [(p.track, p.probability) for p in found] == [("b", 0.5), ("c", 0.4)]
    assert len(predict_next("a", (), successors, min_probability=0.0, max_tracks=1)) == 1
    assert predict_next("a", (), [], min_probability=0.3, max_tracks=2) == ()
    assert predict_next("a", (), [("a", 9)], min_probability=0.1, max_tracks=2) == ()


def test_the_next_rung_is_the_nearest_of_the_same_codec(model: Presentation) -> None:
    assert likely_rendition(model, model.rendition("aac-256k")) == model.rendition("aac-256k")
    assert likely_rendition(model, model.rendition("opus-64k")) == model.rendition("opus-64k")
    assert likely_rendition(model, None) == model.renditions[0]  # the ladder's start rung


def test_a_track_is_prepared_for_from_its_half() -> None:
    assert [near_end(i, 3) for i in range(3)] == [False, True, True]
    assert [near_end(i, 10) for i in range(10)].index(True) == 4
    assert near_end(0, 1)
    assert not near_end(0, 0)
    assert [in_last_segments(i, 5) for i in range(5)] == [False, False, False, True, True]


def test_warm_keys_are_what_a_player_asks_first(model: Presentation) -> None:
    rendition = model.rendition("aac-128k")
    assert warm_keys("b", rendition, 2) == (
        "b/presentation.json",
        "b/aac-128k/playlist.m3u8",
        "b/aac-128k/init.mp4",
        "b/aac-128k/seg-00001.m4s",
        "b/aac-128k/seg-00002.m4s",
    )
    assert len(warm_keys("b", rendition, 99)) == 3 + len(rendition.segments)
    position = segment_position(model, "track/aac-128k/seg-00002.m4s")
    assert position is not None and position[1:] == (1, 3)
    assert segment_position(model, "track/aac-128k/init.mp4") is None
    assert segment_position(model, "track/nope/seg-00001.m4s") is None


def test_the_ledger_settles_each_warm_once() -> None:
    ledger = WarmLedger(max_keys=2, ttl_s=10.0)
    assert ledger.add("k1", 0.0) == 0
    assert ledger.settle("k1", True, 1.0) is Settled.USED
    assert ledger.settle("k1", True, 1.0) is None  # once
    ledger.add("k2", 0.0)
    assert ledger.settle("k2", False, 1.0) is Settled.WASTED  # it had left the hot cache
    ledger.add("k3", 0.0)
    ledger.add("k4", 0.0)
    assert ledger.add("k5", 0.0) == 1  # k3 pushed out, never asked for
    assert ledger.expire(20.0) == 2
    assert len(ledger) == 0
    ledger.add("k6", 0.0)
    assert ledger.settle("k6", True, 11.0) is Settled.WASTED  # too late to count


async def test_memory_transitions_are_bounded() -> None:
    store = MemoryTransitionStore(max_tracks=2, per_track=3)
    for _ in range(4):
        await store.record("a", "often")
    for n in range(10):
        await store.record("a", f"once-{n}")
    found = await store.successors("a")
    assert len(found) == 3
    assert found[0] == ("often", 4)
    assert ("once-9", 1) in found  # the newest is never the one dropped
    await store.record("b", "x")
    await store.record("c", "y")  # a, least recently counted, is forgotten
    assert await store.successors("a") == []
    assert await store.successors("c") == [("y", 1)]
