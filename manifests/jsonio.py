"""``presentation.json``: the model as JSON, schema version 1.

Ticks stay integers; seconds and kb/s appear only as derived, informative
fields for people reading the file (``duration_s``, ``bitrate_kbps``), and are
ignored when reading back.  Reading validates every field and raises
:class:`InvalidPresentationError` naming the field at fault.

``groups`` (the switching groups), a rendition's ``decoder_config_hex`` and
``name_tag`` (its file names' version tag) and ``loudness`` (a stereo downmix's own),
and ``fingerprint`` came later within
version 1: a document without them loads, its groups derived by
:func:`cadenza.manifests.groups.derive_groups`.  A group whose renditions could
not share one init segment (the same rule) is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Final, TypeVar

from cadenza.manifests.encryption import encryption_from_dict, encryption_to_dict
from cadenza.manifests.errors import InvalidPresentationError
from cadenza.manifests.fingerprint import fingerprint_from_dict, fingerprint_to_dict
from cadenza.manifests.groups import audio_object_type, can_share
from cadenza.manifests.jsonfields import (
    read_byte_range,
    read_count,
    read_enum,
    read_field,
    read_hex,
    read_mapping,
    read_positive,
)
from cadenza.manifests.model import (
    ByteRange,
    Codec,
    Loudness,
    Presentation,
    Rendition,
    Segment,
    SegmentLayout,
    SourceInfo,
    SwitchGroup,
)

SCHEMA_VERSION = 1
_TAG: Final = re.compile(r"[0-9A-Za-z]{0,32}")
T = TypeVar("T")


def _range_to_list(value: ByteRange | None) -> list[int] | None:
    return None if value is None else [value.offset_bytes, value.length_bytes]


def _rendition_to_dict(r: Rendition) -> dict[str, object]:
    return {
        "id": r.id,
        "codec": r.codec.value,
        "codecs": r.codecs,
        "sample_rate_hz": r.sample_rate_hz,
        "channels": r.channels,
        "bits_per_sample": r.bits_per_sample,
        "timescale": r.timescale,
        "bitrate_bps": {
            "target": r.target_bitrate_bps,
            "average": r.average_bitrate_bps,
            "peak": r.peak_bitrate_bps,
        },
        "encoder_delay_ticks": r.encoder_delay_ticks,
        "duration_ticks": r.duration_ticks,
        "duration_s": round(r.duration_ticks / r.timescale, 6),
        "layout": r.layout.value,
        "init_size_bytes": r.init_size_bytes,
        "init_range": _range_to_list(r.init_range),
        "index_range": _range_to_list(r.index_range),
        "decoder_config_hex": None if r.decoder_config is None else r.decoder_config.hex(),
        **({"name_tag": r.name_tag} if r.name_tag else {}),
        **({"encryption": encryption_to_dict(r.encryption)} if r.encryption else {}),
        **({"loudness": _loudness_to_dict(r.loudness)} if r.loudness else {}),
        "total_bytes": r.total_bytes,
        "segment_count": len(r.segments),
        "segments": [
            {
                "number": s.number,
                "start_ticks": s.start_ticks,
                "duration_ticks": s.duration_ticks,
                "size_bytes": s.size_bytes,
                **({"byte_range": _range_to_list(s.byte_range)} if s.byte_range else {}),
            }
            for s in r.segments
        ],
    }


def _loudness_to_dict(loudness: Loudness) -> dict[str, object]:
    return {
        "integrated_lufs": loudness.integrated_lufs,
        "true_peak_dbtp": loudness.true_peak_dbtp,
        "loudness_range_lu": loudness.loudness_range_lu,
        "unmeasured_reason": loudness.unmeasured_reason,
    }


def _group_to_dict(g: SwitchGroup) -> dict[str, object]:
    return {
        "id": g.id,
        "codec": g.codec.value,
        "codecs": g.codecs,
        "sample_rate_hz": g.sample_rate_hz,
        "channels": g.channels,
        "audio_object_type": g.audio_object_type,
        "rendition_ids": list(g.rendition_ids),
        "init_uri": g.init_uri,
    }


def presentation_to_dict(p: Presentation, *, renditions: bool = True) -> dict[str, object]:
    """The document; without ``renditions``, its ``renditions`` list is left empty."""
    source = p.source
    return {
        "schema": SCHEMA_VERSION,
        "track_id": p.track_id,
        "timescale": p.timescale,
        "duration_ticks": p.duration_ticks,
        "duration_s": round(p.duration_ticks / p.timescale, 6),
        "target_segment_duration_ticks": p.target_segment_duration_ticks,
        "loudness": None if p.loudness is None else _loudness_to_dict(p.loudness),
        "source": None
        if source is None
        else {
            "file_name": source.file_name,
            "codec_name": source.codec_name,
            "sample_rate_hz": source.sample_rate_hz,
            "channels": source.channels,
            "bits_per_sample": source.bits_per_sample,
        },
        "metadata": [list(pair) for pair in p.metadata],
        "groups": [_group_to_dict(g) for g in p.groups],
        **({"fingerprint": fingerprint_to_dict(p.fingerprint)} if p.fingerprint else {}),
        "renditions": [_rendition_to_dict(r) for r in p.renditions] if renditions else [],
    }


# presentation.json's layout: two-space indent, sorted keys, no NaN.
_ENCODER: Final = json.JSONEncoder(indent=2, sort_keys=True, allow_nan=False)


def presentation_to_json(p: Presentation) -> str:
    return _ENCODER.encode(presentation_to_dict(p)) + "\n"


_RENDITIONS: Final = '\n  "renditions": []'  # the top-level key, in a document without any
_ITEM_INDENT: Final = "\n    "  # a rendition's lines sit two levels deep


def presentation_json_pieces(presentation: Presentation) -> Iterator[str]:
    """``presentation.json`` in pieces, byte for byte as
    :func:`cadenza.manifests.jsonio.presentation_to_json` renders it, one rendition at a time.

    Rendering the whole document at once holds a dict per segment of every rendition
    and, because an indented ``json.dumps`` collects its output as a list of small
    strings before joining it, some ten strings per segment: 21 MiB for a 3-hour
    track's seven renditions, when its text is 2.7 MB.
    """
    head = _ENCODER.encode(presentation_to_dict(presentation, renditions=False))
    before, found, after = head.partition(_RENDITIONS)
    if not presentation.renditions or not found:
        yield presentation_to_json(presentation)
        return
    yield before + _RENDITIONS[:-1]
    for index, rendition in enumerate(presentation.renditions):
        yield ("," if index else "") + _ITEM_INDENT
        # JSON strings escape their newlines: every newline here is the encoder's indent.
        for piece in _ENCODER.iterencode(_rendition_to_dict(rendition)):
            yield piece.replace("\n", _ITEM_INDENT)
    yield "\n  ]" + after + "\n"


# -- reading ---------------------------------------------------------------


def _segment(raw: object, where: str) -> Segment:
    d = read_mapping(raw, where.rstrip("."))
    return Segment(
        number=read_positive(d, "number", where),
        start_ticks=read_count(d, "start_ticks", where),
        duration_ticks=read_positive(d, "duration_ticks", where),
        size_bytes=read_positive(d, "size_bytes", where),
        byte_range=read_byte_range(d.get("byte_range"), f"{where}byte_range"),
    )


def _rendition(raw: object, where: str) -> Rendition:
    d = read_mapping(raw, where.rstrip("."))
    bitrate = read_mapping(d.get("bitrate_bps"), f"{where}bitrate_bps")
    segments_raw = read_field(d, "segments", list, where)
    if not segments_raw:
        raise InvalidPresentationError(f"{where}segments", "must not be empty")
    segments = tuple(_segment(s, f"{where}segments[{i}].") for i, s in enumerate(segments_raw))
    return Rendition(
        id=read_field(d, "id", str, where),
        codec=read_enum(d.get("codec"), Codec, f"{where}codec"),
        codecs=read_field(d, "codecs", str, where),
        sample_rate_hz=read_positive(d, "sample_rate_hz", where),
        channels=read_positive(d, "channels", where),
        timescale=read_positive(d, "timescale", where),
        average_bitrate_bps=read_count(bitrate, "average", f"{where}bitrate_bps."),
        peak_bitrate_bps=read_count(bitrate, "peak", f"{where}bitrate_bps."),
        target_bitrate_bps=read_count(bitrate, "target", f"{where}bitrate_bps.", optional=True),
        encoder_delay_ticks=read_count(d, "encoder_delay_ticks", where),
        duration_ticks=read_positive(d, "duration_ticks", where),
        init_size_bytes=read_positive(d, "init_size_bytes", where),
        segments=segments,
        bits_per_sample=read_count(d, "bits_per_sample", where, optional=True),
        layout=read_enum(d.get("layout", "separate"), SegmentLayout, f"{where}layout"),
        init_range=read_byte_range(d.get("init_range"), f"{where}init_range"),
        index_range=read_byte_range(d.get("index_range"), f"{where}index_range"),
        decoder_config=read_hex(d.get("decoder_config_hex"), f"{where}decoder_config_hex"),
        name_tag=_name_tag(d.get("name_tag", ""), f"{where}name_tag"),
        encryption=encryption_from_dict(d.get("encryption"), f"{where}encryption"),
        loudness=_loudness(d.get("loudness"), f"{where}loudness."),
    )


def _loudness(raw: object, where: str) -> Loudness | None:
    if raw is None:
        return None
    ld = read_mapping(raw, where.rstrip("."))
    reason = read_field(ld, "unmeasured_reason", str, where, optional=True)
    return Loudness(
        # Unmeasured (too short or silent to gate): null, and the reason says why.
        integrated_lufs=read_field(ld, "integrated_lufs", float, where, reason is not None),
        true_peak_dbtp=read_field(ld, "true_peak_dbtp", float, where),
        loudness_range_lu=read_field(ld, "loudness_range_lu", float, where, optional=True),
        unmeasured_reason=reason,
    )


def _name_tag(value: object, field: str) -> str:
    """A version tag goes into file names and URLs: letters and digits only."""
    if not isinstance(value, str) or not _TAG.fullmatch(value):
        raise InvalidPresentationError(field, "expected 0 to 32 letters or digits")
    return value


def _group(raw: object, where: str, renditions: Mapping[str, Rendition]) -> SwitchGroup:
    d = read_mapping(raw, where.rstrip("."))
    ids_raw = read_field(d, "rendition_ids", list, where)
    if not ids_raw or not all(isinstance(i, str) for i in ids_raw):
        raise InvalidPresentationError(f"{where}rendition_ids", "expected rendition ids")
    group = SwitchGroup(
        id=read_field(d, "id", str, where),
        codec=read_enum(d.get("codec"), Codec, f"{where}codec"),
        codecs=read_field(d, "codecs", str, where),
        sample_rate_hz=read_positive(d, "sample_rate_hz", where),
        channels=read_positive(d, "channels", where),
        audio_object_type=read_count(d, "audio_object_type", where, optional=True),
        rendition_ids=tuple(ids_raw),
        init_uri=read_field(d, "init_uri", str, where),
    )
    members = []
    for rendition_id in group.rendition_ids:
        rendition = renditions.get(rendition_id)
        if rendition is None:
            raise InvalidPresentationError(
                f"{where}rendition_ids", f"no rendition {rendition_id!r}"
            )
        shared = (rendition.codec, rendition.codecs, rendition.sample_rate_hz, rendition.channels)
        if shared != (group.codec, group.codecs, group.sample_rate_hz, group.channels):
            raise InvalidPresentationError(
                f"{where}rendition_ids", f"{rendition_id} does not match the group's codec"
            )
        members.append(rendition)
    if not can_share(members):
        raise InvalidPresentationError(
            f"{where}rendition_ids",
            "the renditions do not share one decoder configuration and segment timeline",
        )
    if group.audio_object_type != audio_object_type(group.codecs):
        raise InvalidPresentationError(f"{where}audio_object_type", "does not match codecs")
    return group


def _groups(raw: object, renditions: tuple[Rendition, ...]) -> tuple[SwitchGroup, ...]:
    """The recorded groups; none recorded (a document from before groups): ``()``,
    which the model derives."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidPresentationError("groups", "expected a list")
    by_id = {r.id: r for r in renditions}
    groups = tuple(_group(g, f"groups[{i}].", by_id) for i, g in enumerate(raw))
    group_ids = [g.id for g in groups]
    member_ids = [i for g in groups for i in g.rendition_ids]
    if len(set(group_ids)) != len(group_ids):
        raise InvalidPresentationError("groups", "group ids must be unique")
    if len(set(member_ids)) != len(member_ids):
        raise InvalidPresentationError("groups", "a rendition belongs to one group at most")
    return groups


def presentation_from_dict(d: object) -> Presentation:
    doc = read_mapping(d, "document")
    schema = doc.get("schema")
    if schema != SCHEMA_VERSION:
        raise InvalidPresentationError("schema", f"unsupported version {schema!r}")
    renditions_raw = read_field(doc, "renditions", list, "")
    if not renditions_raw:
        raise InvalidPresentationError("renditions", "must not be empty")
    renditions = tuple(_rendition(r, f"renditions[{i}].") for i, r in enumerate(renditions_raw))
    ids = [r.id for r in renditions]
    if len(set(ids)) != len(ids):
        raise InvalidPresentationError("renditions", "rendition ids must be unique")
    loudness = _loudness(doc.get("loudness"), "loudness.")
    source = None
    if doc.get("source") is not None:
        sd = read_mapping(doc["source"], "source")
        source = SourceInfo(
            file_name=read_field(sd, "file_name", str, "source."),
            codec_name=read_field(sd, "codec_name", str, "source."),
            sample_rate_hz=read_positive(sd, "sample_rate_hz", "source."),
            channels=read_positive(sd, "channels", "source."),
            bits_per_sample=read_count(sd, "bits_per_sample", "source.", optional=True),
        )
    metadata_raw = doc.get("metadata", [])
    if not isinstance(metadata_raw, list) or not all(
        isinstance(m, list) and len(m) == 2 and all(isinstance(x, str) for x in m)
        for m in metadata_raw
    ):
        raise InvalidPresentationError("metadata", "expected a list of [key, value] strings")
    return Presentation(
        track_id=read_field(doc, "track_id", str, ""),
        timescale=read_positive(doc, "timescale", ""),
        duration_ticks=read_positive(doc, "duration_ticks", ""),
        renditions=renditions,
        loudness=loudness,
        source=source,
        target_segment_duration_ticks=read_count(doc, "target_segment_duration_ticks", "", True),
        metadata=tuple((m[0], m[1]) for m in metadata_raw),
        groups=_groups(doc.get("groups"), renditions),
        fingerprint=None
        if doc.get("fingerprint") is None
        else fingerprint_from_dict(doc["fingerprint"]),
    )


def presentation_from_json(text: str | bytes) -> Presentation:
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidPresentationError("document", f"not valid JSON: {exc}") from exc
    return presentation_from_dict(data)
