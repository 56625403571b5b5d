"""Ladder presets, files and validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cadenza.manifests.errors import InvalidLadderError, LadderSyntaxError
from cadenza.manifests.ladder import (
    DEFAULT_LADDER,
    MAX_RUNGS,
    PRESETS,
    AacProfile,
    Ladder,
    LadderFormat,
    Rung,
    parse_ladder,
    validate_ladder,
)
from cadenza.manifests.model import Codec
from cadenza.packager.errors import LadderError
from cadenza.packager.ladder import (
    check_bitrate_fits,
    load_ladder,
    resolve_channels,
    resolve_sample_rate,
)


def parse_document(data: object) -> Ladder:
    """The strict parser, given a document as JSON text."""
    return parse_ladder(json.dumps(data), fmt=LadderFormat.JSON)


def test_music_preset_is_the_documented_default_ladder() -> None:
    ids = [r.id for r in PRESETS["music"].rungs]
    assert ids == ["aac-64k", "aac-128k", "aac-256k", "aac-320k", "opus-64k", "opus-128k", "flac"]


@pytest.mark.parametrize("ladder", list(PRESETS.values()), ids=list(PRESETS))
def test_every_preset_validates(ladder: Ladder) -> None:
    validate_ladder(ladder)


def test_toml_ladder_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        'name = "mine"\n[[rung]]\ncodec = "aac"\nbitrate_kbps = 96\n'
        '[[rung]]\ncodec = "opus"\nbitrate_kbps = 48\nchannels = 2\n',
        encoding="utf-8",
    )
    ladder = load_ladder(str(path))
    assert ladder == Ladder("mine", (Rung(Codec.AAC, 96_000), Rung(Codec.OPUS, 48_000, channels=2)))


def test_json_ladder_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "l.json"
    path.write_text(json.dumps({"rungs": [{"codec": "flac"}]}), encoding="utf-8")
    assert load_ladder(str(path)).rungs == (Rung(Codec.FLAC),)


def test_unknown_preset_names_the_presets() -> None:
    with pytest.raises(LadderError, match="not a preset"):
        load_ladder("podcast-ultra")


def test_unreadable_ladder_file_is_a_ladder_error(tmp_path: Path) -> None:
    with pytest.raises(LadderError, match="cannot read"):
        load_ladder(str(tmp_path / "missing.toml"))


def test_malformed_toml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[[rung]\ncodec=", encoding="utf-8")
    with pytest.raises(LadderError, match="not valid TOML"):
        load_ladder(str(path))


def test_unknown_codec_is_named() -> None:
    with pytest.raises(InvalidLadderError, match="unknown codec 'mp3'"):
        parse_document({"rung": [{"codec": "mp3", "bitrate_kbps": 128}]})


def test_unknown_rung_key_is_named() -> None:
    with pytest.raises(InvalidLadderError, match=r"unknown key.*bitrate"):
        parse_document({"rung": [{"codec": "aac", "bitrate": 128}]})


@pytest.mark.parametrize(("codec", "kbps"), [("aac", 8), ("aac", 1000), ("opus", 2), ("opus", 600)])
def test_bitrate_outside_codec_range_is_refused(codec: str, kbps: int) -> None:
    with pytest.raises(InvalidLadderError, match="outside"):
        parse_document({"rung": [{"codec": codec, "bitrate_kbps": kbps}]})


def test_lossy_rung_needs_a_bitrate() -> None:
    with pytest.raises(InvalidLadderError, match="needs bitrate_kbps"):
        parse_document({"rung": [{"codec": "opus"}]})


def test_flac_with_a_bitrate_is_refused() -> None:
    with pytest.raises(InvalidLadderError, match="lossless"):
        parse_document({"rung": [{"codec": "flac", "bitrate_kbps": 900}]})


@pytest.mark.parametrize("profile", ["he", "he-v2"])
def test_he_aac_is_refused_rather_than_mislabelled(profile: str) -> None:
    """FFmpeg's aac encoder ignores HE profiles and writes LC: never mislabel."""
    with pytest.raises(InvalidLadderError, match=r"HE-AAC.*not available"):
        parse_document({"rung": [{"codec": "aac", "bitrate_kbps": 48, "profile": profile}]})


def test_he_profile_enum_exists_so_the_refusal_is_explicit() -> None:
    assert AacProfile("he") is AacProfile.HE


def test_duplicate_rungs_are_refused() -> None:
    with pytest.raises(InvalidLadderError, match="duplicates rung 1"):
        parse_document({"rung": [{"codec": "aac", "bitrate_kbps": 128}] * 2})


def test_one_sample_rate_per_codec() -> None:
    with pytest.raises(InvalidLadderError, match="share a sample rate"):
        parse_document(
            {
                "rung": [
                    {"codec": "aac", "bitrate_kbps": 64, "sample_rate_hz": 44100},
                    {"codec": "aac", "bitrate_kbps": 128, "sample_rate_hz": 48000},
                ]
            }
        )


def test_opus_must_run_at_48k() -> None:
    with pytest.raises(InvalidLadderError, match="48000"):
        parse_document({"rung": [{"codec": "opus", "bitrate_kbps": 64, "sample_rate_hz": 44100}]})


def test_unsupported_channel_count_is_refused() -> None:
    with pytest.raises(InvalidLadderError, match="channels must be 1, 2 or 6"):
        parse_document({"rung": [{"codec": "aac", "bitrate_kbps": 64, "channels": 4}]})


@pytest.mark.parametrize(
    ("source", "expected"),
    [(44100, 44100), (88200, 44100), (48000, 48000), (96000, 48000), (8000, 8000), (22050, 22050),
     (37800, 44100)],
)  # fmt: skip
def test_aac_rate_follows_the_source_family(source: int, expected: int) -> None:
    """Never above the source: a source below 44.1 kHz keeps its rate (or AAC's next one up)."""
    assert resolve_sample_rate(Rung(Codec.AAC, 128_000), source) == expected


def test_flac_keeps_the_source_rate() -> None:
    assert resolve_sample_rate(Rung(Codec.FLAC), 192000) == 192000


@pytest.mark.parametrize(("source", "expected"), [(1, 1), (2, 2), (6, 6), (8, 6), (4, 2)])
def test_channels_follow_the_source_within_supported_layouts(source: int, expected: int) -> None:
    assert resolve_channels(Rung(Codec.AAC, 128_000), source) == expected


def test_aac_bitrate_above_the_frame_ceiling_is_refused() -> None:
    """ISO/IEC 14496-3: at most 6144 bits per channel per 1024-sample frame."""
    with pytest.raises(LadderError, match="ceiling"):
        check_bitrate_fits(Rung(Codec.AAC, 320_000), 22050, 1)


def test_the_default_ladder_is_the_music_preset() -> None:
    """One default: what ``cadenza package`` encodes and the ABR tools play."""
    assert DEFAULT_LADDER is PRESETS["music"]
    assert DEFAULT_LADDER.bitrates_bps(Codec.AAC) == (64_000, 128_000, 256_000, 320_000)
    assert DEFAULT_LADDER.bitrates_bps(Codec.OPUS) == (64_000, 128_000)
    assert DEFAULT_LADDER.bitrates_bps(Codec.FLAC) == ()


def test_toml_and_json_texts_spell_the_same_ladder() -> None:
    toml = 'name = "x"\n[[rung]]\ncodec = "aac"\nbitrate_kbps = 96\n'
    json_text = '{"name": "x", "rung": [{"codec": "aac", "bitrate_kbps": 96}]}'
    expected = Ladder("x", (Rung(Codec.AAC, 96_000),))
    assert parse_ladder(toml, fmt=LadderFormat.TOML) == expected
    assert parse_ladder(json_text, fmt=LadderFormat.JSON) == expected


@pytest.mark.parametrize(
    ("text", "fmt"), [("[[rung]\ncodec=", LadderFormat.TOML), ("{rung: []", LadderFormat.JSON)]
)
def test_text_that_does_not_parse_is_a_syntax_error(text: str, fmt: LadderFormat) -> None:
    with pytest.raises(LadderSyntaxError, match=f"not valid {fmt.value.upper()}") as caught:
        parse_ladder(text, fmt=fmt)
    assert caught.value.fmt == fmt.value


def test_more_than_max_rungs_of_one_codec_is_refused() -> None:
    rungs = [{"codec": "aac", "bitrate_kbps": 32 + 16 * i} for i in range(MAX_RUNGS + 1)]
    with pytest.raises(InvalidLadderError, match=f"at most {MAX_RUNGS} per codec") as caught:
        parse_document({"rung": rungs})
    assert caught.value.where == "aac"
    parse_document({"rung": rungs[:MAX_RUNGS]})


def test_a_validation_error_in_a_file_keeps_the_packager_message(tmp_path: Path) -> None:
    """``load_ladder`` reports the model's error as a LadderError naming the rung."""
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"rung": [{"codec": "mp3", "bitrate_kbps": 128}]}), encoding="utf-8")
    with pytest.raises(LadderError, match=r"^ladder rung 1: unknown codec 'mp3'") as caught:
        load_ladder(str(path))
    assert caught.value.where == "rung 1"
