"""Switching groups in the model and in ``presentation.json``: the rule that forms
them, what it keeps out, how they load from documents written before them, and how
a filtered presentation keeps them to the renditions it holds."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings

from cadenza.manifests.errors import InvalidPresentationError, NotSwitchableError
from cadenza.manifests.filters import RenditionFilter
from cadenza.manifests.groups import (
    SwitchGroup,
    audio_object_type,
    can_share,
    derive_groups,
    group_id_of_folder,
)
from cadenza.manifests.jsonio import presentation_from_json, presentation_to_json
from cadenza.manifests.model import Codec, Presentation, Rendition, SegmentLayout
from tests.manifests.test_rendering import (
    GOLDEN,
    make_presentation,
    make_rendition,
    presentations,
)


def _ids(groups: tuple[SwitchGroup, ...]) -> dict[str, tuple[str, ...]]:
    return {g.id: g.rendition_ids for g in groups}


def _with(presentation: Presentation, *extra: Rendition) -> Presentation:
    return dataclasses.replace(
        presentation, renditions=(*presentation.renditions, *extra), groups=()
    )


def test_the_music_ladder_forms_one_group_per_codec() -> None:
    groups = make_presentation().groups
    assert _ids(groups) == {
        "aac": ("aac-64k", "aac-128k", "aac-256k", "aac-320k"),
        "opus": ("opus-64k", "opus-128k"),
        "flac": ("flac",),
    }
    aac = groups[0]
    assert (aac.codec, aac.codecs, aac.sample_rate_hz, aac.channels) == (
        Codec.AAC,
        "mp4a.40.2",
        44100,
        2,
    )
    assert aac.audio_object_type == 2  # AAC-LC
    assert aac.init_uri == "aac-320k/init.mp4"  # the top rung's: its bitrates bound all
    assert aac.folder == "group-aac"
    assert [g.switchable for g in groups] == [True, True, False]


def test_rungs_are_listed_in_bitrate_order_whatever_the_ladder_order() -> None:
    presentation = make_presentation()
    shuffled = dataclasses.replace(
        presentation, renditions=tuple(reversed(presentation.renditions)), groups=()
    )
    assert shuffled.group("aac").rendition_ids == ("aac-64k", "aac-128k", "aac-256k", "aac-320k")


def test_an_aac_rung_at_another_sample_rate_is_kept_out_of_the_group() -> None:
    odd = dataclasses.replace(
        make_rendition(Codec.AAC, 96, rate=22050, source_ticks=(37 * 44100 + 12345) // 2),
        id="aac-96k-22khz",
    )
    presentation = _with(make_presentation(), odd)
    assert presentation.group("aac").rendition_ids == (
        "aac-64k",
        "aac-128k",
        "aac-256k",
        "aac-320k",
    )
    assert presentation.group("aac-2").rendition_ids == ("aac-96k-22khz",)
    assert presentation.group("aac-2").sample_rate_hz == 22050
    assert presentation.group_of("aac-96k-22khz") == presentation.group("aac-2")


@pytest.mark.parametrize(
    "change",
    [
        {"channels": 1},
        {"codecs": "mp4a.40.5"},  # HE-AAC: another audio object type
        {"encoder_delay_ticks": 2048},  # the init's edit list differs
        {"duration_ticks": 37 * 44100},
        {"decoder_config": b"\x12\x08"},  # another AudioSpecificConfig
    ],
)
def test_a_rung_that_would_break_its_group_forms_its_own(change: dict[str, object]) -> None:
    odd = dataclasses.replace(make_rendition(Codec.AAC, 96), id="aac-96k", **change)  # type: ignore[arg-type]
    groups = _with(make_presentation(), odd).groups
    assert "aac-96k" not in groups[0].rendition_ids
    assert ("aac-96k",) in _ids(groups).values()


def test_a_rung_cut_differently_is_kept_out() -> None:
    odd = dataclasses.replace(make_rendition(Codec.AAC, 96, frames_per_segment=100), id="aac-96k")
    groups = _with(make_presentation(), odd).groups
    assert _ids(groups)["aac"] == ("aac-64k", "aac-128k", "aac-256k", "aac-320k")
    assert _ids(groups)["aac-2"] == ("aac-96k",)


def test_opus_rungs_share_a_group_only_when_their_dops_match() -> None:
    # dOps: version, channels, pre-skip 312, input rate 48000 / 44100, gain, family 0
    dops_48k = bytes.fromhex("000201380000bb80000000")
    dops_44k = bytes.fromhex("000201380000ac44000000")
    base = make_presentation()
    renditions = tuple(
        dataclasses.replace(r, decoder_config=dops_44k if r.id == "opus-128k" else dops_48k)
        if r.codec is Codec.OPUS
        else r
        for r in base.renditions
    )
    groups = dataclasses.replace(base, renditions=renditions, groups=()).groups
    assert _ids(groups)["opus"] == ("opus-64k",)
    assert _ids(groups)["opus-2"] == ("opus-128k",)
    same = tuple(
        dataclasses.replace(r, decoder_config=dops_48k) if r.codec is Codec.OPUS else r
        for r in base.renditions
    )
    assert _ids(dataclasses.replace(base, renditions=same, groups=()).groups)["opus"] == (
        "opus-64k",
        "opus-128k",
    )


def test_flac_is_always_a_group_of_one() -> None:
    twin = dataclasses.replace(make_rendition(Codec.FLAC, None), id="flac-twin")
    groups = _with(make_presentation(), twin).groups
    assert _ids(groups)["flac"] == ("flac",)
    assert _ids(groups)["flac-2"] == ("flac-twin",)
    assert not can_share([make_rendition(Codec.FLAC, None), twin])


def test_the_largest_group_of_a_codec_takes_its_name() -> None:
    mono = [
        dataclasses.replace(make_rendition(Codec.AAC, k, channels=1), id=f"aac-{k}k-1ch")
        for k in (32, 48)
    ]
    stereo = make_rendition(Codec.AAC, 128)
    groups = derive_groups([*mono, stereo])
    assert _ids(groups) == {"aac": ("aac-32k-1ch", "aac-48k-1ch"), "aac-2": ("aac-128k",)}


def test_a_filtered_presentation_keeps_its_groups_to_what_it_holds() -> None:
    presentation = make_presentation()
    capped = RenditionFilter(max_bitrate_bps=128_000).apply(presentation)
    assert _ids(capped.groups) == {
        "aac": ("aac-64k", "aac-128k"),
        "opus": ("opus-64k", "opus-128k"),
    }
    # The group keeps its init segment: the packager made the group's inits identical.
    assert capped.group("aac").init_uri == "aac-320k/init.mp4"
    only_opus = RenditionFilter(codecs=frozenset({Codec.OPUS})).apply(presentation)
    assert _ids(only_opus.groups) == {"opus": ("opus-64k", "opus-128k")}


def test_groups_round_trip_through_presentation_json() -> None:
    presentation = _with(
        make_presentation(),
        dataclasses.replace(make_rendition(Codec.AAC, 96, channels=1), id="aac-96k-1ch"),
    )
    document = json.loads(presentation_to_json(presentation))
    assert [g["id"] for g in document["groups"]] == ["aac", "aac-2", "opus", "flac"]
    assert presentation_from_json(presentation_to_json(presentation)) == presentation


def test_a_presentation_json_from_before_groups_loads_with_derived_groups() -> None:
    old_text = (GOLDEN / "presentation-without-groups.json").read_text(encoding="utf-8")
    assert "groups" not in json.loads(old_text)
    old = presentation_from_json(old_text)
    assert old == make_presentation()
    recorded = json.loads((GOLDEN / "presentation.json").read_text(encoding="utf-8"))["groups"]
    assert [(g.id, list(g.rendition_ids), g.init_uri) for g in old.groups] == [
        (g["id"], g["rendition_ids"], g["init_uri"]) for g in recorded
    ]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["groups"][0]["rendition_ids"].append("nope"), "groups[0].rendition_ids"),
        (lambda d: d["groups"][0]["rendition_ids"].append("opus-64k"), "groups[0].rendition_ids"),
        (lambda d: d["groups"][1]["rendition_ids"].append("aac-64k"), "groups[1].rendition_ids"),
        (lambda d: d["groups"][0].update(audio_object_type=5), "groups[0].audio_object_type"),
        (lambda d: d["groups"][1].update(id="aac"), "groups"),
        (lambda d: d["groups"].append(dict(d["groups"][2], id="flac-2")), "groups"),
        (lambda d: d.update(groups={}), "groups"),
        (
            lambda d: d["renditions"][0].update(decoder_config_hex="xyz"),
            "renditions[0].decoder_config_hex",
        ),
    ],
)
def test_groups_that_do_not_hold_are_refused(mutate: object, field: str) -> None:
    document = json.loads(presentation_to_json(make_presentation()))
    assert callable(mutate)
    mutate(document)
    with pytest.raises(InvalidPresentationError) as error:
        presentation_from_json(json.dumps(document))
    assert error.value.field == field


def test_a_group_mixing_timelines_is_refused() -> None:
    presentation = _with(
        make_presentation(),
        dataclasses.replace(make_rendition(Codec.AAC, 96, frames_per_segment=100), id="aac-96k"),
    )
    document = json.loads(presentation_to_json(presentation))
    groups = {g["id"]: g for g in document["groups"]}
    groups["aac"]["rendition_ids"].insert(0, "aac-96k")
    document["groups"] = [g for g in document["groups"] if g["id"] != "aac-2"]
    with pytest.raises(InvalidPresentationError, match="segment timeline"):
        presentation_from_json(json.dumps(document))


def test_switchable_groups_are_those_with_two_rungs_or_more() -> None:
    assert [g.id for g in make_presentation().switchable_groups()] == ["aac", "opus"]
    lossless = RenditionFilter(codecs=frozenset({Codec.FLAC})).apply(make_presentation())
    with pytest.raises(NotSwitchableError) as error:
        lossless.switchable_groups()
    assert (error.value.track_id, error.value.groups) == ("golden-track", ("flac",))
    with pytest.raises(NotSwitchableError, match="single-file"):
        make_presentation(SegmentLayout.SINGLE).switchable_groups()


def test_group_folders_and_audio_object_types_parse() -> None:
    assert group_id_of_folder("group-aac-2") == "aac-2"
    assert group_id_of_folder("group-") is None
    assert group_id_of_folder("aac-128k") is None
    assert [audio_object_type(c) for c in ("mp4a.40.2", "mp4a.40.29", "opus", "mp4a.40.x")] == [
        2,
        29,
        None,
        None,
    ]


@settings(max_examples=40, deadline=None)
@given(presentations())
def test_every_rendition_is_in_exactly_one_group(presentation: Presentation) -> None:
    members = [i for g in presentation.groups for i in g.rendition_ids]
    assert sorted(members) == sorted(r.id for r in presentation.renditions)
