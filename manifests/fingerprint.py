"""A track's fingerprint: what its packaged output was made from, recorded in
``presentation.json`` so a re-run can tell an up-to-date track from a stale one.

The fingerprint holds everything the output depends on:

- the source: the SHA-256 of its bytes, its size, its file name (``source_name``)
  and the SHA-256 of where it was read from (``source_location_sha256``, of an absolute
  local path or an ``s3://`` URL). The location itself is not recorded:
  ``presentation.json`` is published beside the media, and a server's paths or bucket
  names are nobody's business; its hash is enough to tell two sources apart;
- the ladder, as canonical text of its rungs (:func:`ladder_text`; the ladder's
  name is left out, since renaming a ladder changes no byte of the output);
- the target segment duration, an exact fraction of a second kept as two
  integers (``segment_duration_ticks`` in ``segment_duration_timescale``);
- the other options that change the output (``options``: name/value pairs, such
  as the segment layout);
- the output format version (:data:`FORMAT_VERSION`) and, for people reading the
  file, the cadenza version that wrote it.

A re-run compares fingerprints field by field (:meth:`Fingerprint.changes`). The
cadenza version alone is *not* a reason to repackage: a release that changes the
output (its bytes, names or layout) bumps :data:`FORMAT_VERSION`, and that is a
reason. So upgrading cadenza does not repackage a whole catalogue unless the output
would actually differ.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from cadenza.manifests.errors import InvalidPresentationError

if TYPE_CHECKING:  # the model imports this module, and the ladder imports the model
    from cadenza.manifests.ladder import Ladder

__all__ = [
    "FORMAT_VERSION",
    "Fingerprint",
    "FingerprintField",
    "fingerprint_from_dict",
    "fingerprint_to_dict",
    "ladder_text",
]

# The packager's output format. Bump it when a release changes what a packaging
# writes for the same inputs (bytes, file names, layout): every track made by an
# older format is then repackaged on the next run.
FORMAT_VERSION: Final = 1


class FingerprintField(enum.StrEnum):
    """The parts of a fingerprint whose change makes a track stale."""

    SOURCE = "source"  # the source's bytes (its SHA-256 or size)
    LADDER = "ladder"
    SEGMENT_DURATION = "segment_duration"
    OPTIONS = "options"
    FORMAT = "format"  # the packager's output format version


@dataclass(frozen=True, slots=True)
class Fingerprint:
    source_sha256: str  # 64 lower-case hex digits
    source_size_bytes: int
    source_name: str  # the file name (last path or URL component), for people
    source_location_sha256: str  # SHA-256 of the absolute path or s3:// URL read
    ladder: str  # ladder_text() of the ladder used
    segment_duration_ticks: int  # the target, in segment_duration_timescale
    segment_duration_timescale: int
    options: tuple[tuple[str, str], ...] = ()
    cadenza_version: str = ""
    format_version: int = FORMAT_VERSION
    # Where this run read the source (never serialised): named in error messages.
    source_location: str = field(default="", compare=False)

    def changes(self, previous: Fingerprint) -> tuple[FingerprintField, ...]:
        """The fields in which ``previous`` (the recorded fingerprint) differs from this
        one, in a fixed order; empty when the recorded output is up to date.

        Where the source was read from and the cadenza version do not count: the same
        bytes moved to another path make the same output."""
        changed = []
        if (self.source_sha256, self.source_size_bytes) != (
            previous.source_sha256,
            previous.source_size_bytes,
        ):
            changed.append(FingerprintField.SOURCE)
        if self.ladder != previous.ladder:
            changed.append(FingerprintField.LADDER)
        if (
            self.segment_duration_ticks * previous.segment_duration_timescale
            != previous.segment_duration_ticks * self.segment_duration_timescale
        ):
            changed.append(FingerprintField.SEGMENT_DURATION)
        if dict(self.options) != dict(previous.options):
            changed.append(FingerprintField.OPTIONS)
        if self.format_version != previous.format_version:
            changed.append(FingerprintField.FORMAT)
        return tuple(changed)

    def is_other_source(self, previous: Fingerprint) -> bool:
        """Whether ``previous`` was made from a different file: another path *and* other
        bytes. (The same path with new bytes is the source changed; other path, same
        bytes is the source moved.)"""
        return (
            self.source_location_sha256 != previous.source_location_sha256
            and self.source_sha256 != previous.source_sha256
        )


def ladder_text(ladder: Ladder) -> str:
    """The canonical text of a ladder's rungs: compact JSON, one object per rung in
    ladder order, keys sorted, unset fields null. Two ladders encode alike exactly
    when their texts are equal."""
    rungs = [
        {
            "codec": rung.codec.value,
            "bitrate_bps": rung.bitrate_bps,
            "sample_rate_hz": rung.sample_rate_hz,
            "channels": rung.channels,
            "profile": rung.profile.value,
        }
        for rung in ladder.rungs
    ]
    return json.dumps(rungs, sort_keys=True, separators=(",", ":"))


def fingerprint_to_dict(f: Fingerprint) -> dict[str, object]:
    return {
        "source_sha256": f.source_sha256,
        "source_size_bytes": f.source_size_bytes,
        "source_name": f.source_name,
        "source_location_sha256": f.source_location_sha256,
        "ladder": f.ladder,
        "segment_duration": {
            "ticks": f.segment_duration_ticks,
            "timescale": f.segment_duration_timescale,
        },
        "options": {name: value for name, value in f.options},
        "cadenza_version": f.cadenza_version,
        "format_version": f.format_version,
    }


def _field(d: Mapping[str, object], key: str, kind: type, where: str = "fingerprint.") -> object:
    value = d.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidPresentationError(f"{where}{key}", f"expected {kind.__name__}")
    return value


def _positive(d: Mapping[str, object], key: str, where: str) -> int:
    value = _field(d, key, int, where)
    assert isinstance(value, int)
    if value <= 0:
        raise InvalidPresentationError(f"{where}{key}", "must be positive")
    return value


def _hex64(d: Mapping[str, object], key: str) -> str:
    digest = str(_field(d, key, str))
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise InvalidPresentationError(f"fingerprint.{key}", "expected 64 hex digits")
    return digest


def fingerprint_from_dict(raw: object) -> Fingerprint:
    """Read ``presentation.json``'s ``fingerprint`` object; raises
    :class:`InvalidPresentationError` naming the field at fault."""
    if not isinstance(raw, Mapping):
        raise InvalidPresentationError("fingerprint", "expected an object")
    digest = _hex64(raw, "source_sha256")
    size = _field(raw, "source_size_bytes", int)
    assert isinstance(size, int)
    if size < 0:
        raise InvalidPresentationError("fingerprint.source_size_bytes", "must not be negative")
    duration = raw.get("segment_duration")
    if not isinstance(duration, Mapping):
        raise InvalidPresentationError("fingerprint.segment_duration", "expected an object")
    options = raw.get("options", {})
    if not isinstance(options, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in options.items()
    ):
        raise InvalidPresentationError("fingerprint.options", "expected string values")
    return Fingerprint(
        source_sha256=digest,
        source_size_bytes=size,
        source_name=str(_field(raw, "source_name", str)),
        source_location_sha256=_hex64(raw, "source_location_sha256"),
        ladder=str(_field(raw, "ladder", str)),
        segment_duration_ticks=_positive(duration, "ticks", "fingerprint.segment_duration."),
        segment_duration_timescale=_positive(
            duration, "timescale", "fingerprint.segment_duration."
        ),
        options=tuple(sorted((str(k), str(v)) for k, v in options.items())),
        cadenza_version=str(_field(raw, "cadenza_version", str)),
        format_version=_positive(raw, "format_version", "fingerprint."),
    )
