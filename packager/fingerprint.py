"""Whether a track needs packaging, and under which file names.

Each track's source is hashed (SHA-256, streamed in 1 MiB reads, so a 3-hour master
costs no more memory than a short one) and, with the ladder, the segment duration
and the output-affecting options, makes the track's
:class:`~cadenza.manifests.fingerprint.Fingerprint`.  :func:`decide` compares it with
what the destination holds:

- nothing there: package (``new``);
- a complete track with the same fingerprint: ``skip``;
- a complete track made from another file (another path *and* other bytes): a
  ``collision``, an error naming both files, unless ``--force``;
- otherwise ``repackage``, saying which fields changed (a track packaged before
  fingerprints were recorded counts as changed).

A track is packaged under a fresh version tag (:func:`new_name_tag`) whenever the
destination already holds files for it, so a republished track's segments get new
URLs and an immutable cache can never mix two packagings; the first packaging of a
track keeps the plain names (``init.mp4``, ``seg-00001.m4s``).
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as distribution_version
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cadenza.manifests.errors import ManifestError
from cadenza.manifests.fingerprint import Fingerprint, FingerprintField, ladder_text
from cadenza.manifests.jsonio import presentation_from_json
from cadenza.manifests.ladder import Ladder
from cadenza.manifests.model import (
    MASTER_NAME,
    MPD_NAME,
    PRESENTATION_NAME,
    Presentation,
    SegmentLayout,
)
from cadenza.packager.errors import InputError
from cadenza.store.atomic import oserror_reason
from cadenza.store.s3url import is_s3_url

if TYPE_CHECKING:  # the track module imports this one
    from cadenza.packager.track import PackageOptions

HASH_CHUNK_BYTES: Final = 1 << 20
TAG_BYTES: Final = 4  # 8 hex digits; drawn again on the rare clash with a name in use
UNKNOWN_VERSION: Final = "0+unknown"


def cadenza_version() -> str:
    """The installed distribution's version (the packager may not import the
    command-line package, whose ``cadenza.version`` reads the same metadata)."""
    try:
        return distribution_version("cadenza")
    except PackageNotFoundError:
        return UNKNOWN_VERSION


def hash_file(path: Path) -> tuple[str, int]:
    """The SHA-256 (hex) and size of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, not a media file") from None
    except OSError as exc:  # the reasons as media_input.open_media words them
        raise InputError(path, f"cannot read: {oserror_reason(exc)}") from exc
    return digest.hexdigest(), size


def source_location(local: Path, given: str) -> str:
    """Where a source is read from, as the fingerprint records it: an ``s3://`` URL as
    given, a local file as its absolute path (the same file from any working folder)."""
    return given if is_s3_url(given) else str(Path(given).absolute())


def source_name(given: str) -> str:
    """The file name a fingerprint keeps for people: the last component of the path or URL."""
    return given.rstrip("/").rsplit("/", 1)[-1]


def fingerprint_source(
    local: Path,
    given: str,
    *,
    ladder: Ladder,
    segment_duration: Fraction,
    single_file: bool,
    extra_options: tuple[tuple[str, str], ...] = (),
) -> Fingerprint:
    """Hash the source at ``local`` (read from ``given``, a path or URL) and make its
    fingerprint with the options that shape the output."""
    digest, size = hash_file(local)
    location = source_location(local, given)
    layout = SegmentLayout.SINGLE if single_file else SegmentLayout.SEPARATE
    return Fingerprint(
        source_sha256=digest,
        source_size_bytes=size,
        source_name=source_name(given),
        source_location_sha256=hashlib.sha256(location.encode()).hexdigest(),
        source_location=location,
        ladder=ladder_text(ladder),
        segment_duration_ticks=segment_duration.numerator,
        segment_duration_timescale=segment_duration.denominator,
        # extra_options: the encryption's (packager.keys), so a change repackages.
        options=(("layout", layout.value), *extra_options),
        cadenza_version=cadenza_version(),
    )


class Verdict(enum.StrEnum):
    NEW = "new"
    SKIP = "skip"
    REPACKAGE = "repackage"
    COLLISION = "collision"


@dataclass(frozen=True, slots=True)
class Previous:
    """What the destination holds for a track: its parsed ``presentation.json`` (None
    when missing or damaged: not complete) and every file name below the track folder
    (relative POSIX paths, including older packagings kept for their grace period)."""

    presentation: Presentation | None = None
    names: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Decision:
    fingerprint: Fingerprint
    verdict: Verdict
    changed: tuple[FingerprintField, ...] = ()
    forced: bool = False
    previous_source: str | None = None
    name_tag: str = ""  # the version tag of the new packaging's file names

    @property
    def reason(self) -> str | None:
        """Why the track is (re)packaged, for the report; None for a new track."""
        if self.verdict is Verdict.SKIP:
            return "up to date: fingerprint matches"
        if self.verdict is Verdict.COLLISION:
            return "a different source already uses this track id"
        if self.verdict is Verdict.NEW:
            return None
        if self.forced:
            return "repackaged: --force"
        if not self.changed:
            return "repackaged: no fingerprint recorded"
        return f"repackaged: {', '.join(self.changed)} changed"

    def collision_error(self, track_id: str) -> str:
        return (
            f"track id {track_id!r} is already packaged from {self.previous_source}, a "
            f"different file than {self.fingerprint.source_location}; rename one of them, "
            "or use --force to replace it"
        )


def new_name_tag(names: Iterable[str]) -> str:
    """A random version tag that appears in none of ``names``."""
    taken = set(names)
    while True:
        tag = secrets.token_hex(TAG_BYTES)
        if not any(tag in name for name in taken):
            return tag


def decide(fingerprint: Fingerprint, previous: Previous, *, force: bool) -> Decision:
    """What to do with a track (see the module docstring); the new packaging's version
    tag is chosen here too: none when the destination holds no file of the track."""
    tag = new_name_tag(previous.names) if previous.names else ""
    done = previous.presentation
    if done is None:
        return Decision(fingerprint, Verdict.NEW, forced=force, name_tag=tag)
    recorded = done.fingerprint
    if force:
        return Decision(fingerprint, Verdict.REPACKAGE, forced=True, name_tag=tag)
    if recorded is None:
        return Decision(fingerprint, Verdict.REPACKAGE, name_tag=tag)
    if fingerprint.is_other_source(recorded):
        previous_source = f"{recorded.source_name} (sha256 {recorded.source_sha256[:12]}…)"
        return Decision(fingerprint, Verdict.COLLISION, previous_source=previous_source)
    changed = fingerprint.changes(recorded)
    if not changed:
        return Decision(fingerprint, Verdict.SKIP)
    return Decision(fingerprint, Verdict.REPACKAGE, changed, name_tag=tag)


def current_names(presentation: Presentation) -> set[str]:
    """Every file a packaged track's presentation names, relative to the track folder:
    the top-level manifests and each rendition's init segment, segments and playlist."""
    names = {PRESENTATION_NAME, MASTER_NAME, MPD_NAME}
    for r in presentation.renditions:
        names.add(f"{r.id}/{r.init_name}")
        names.add(f"{r.id}/{r.playlist_name}")
        names.update(f"{r.id}/{r.segment_name(s)}" for s in r.segments)
    return names


def read_presentation(data: bytes | None) -> Presentation | None:
    """A ``presentation.json``'s model; None for no file or a damaged one."""
    if data is None:
        return None
    try:
        return presentation_from_json(data)
    except ManifestError:
        return None


def local_previous(track_dir: Path) -> Previous:
    """What a local track folder holds (see :class:`Previous`)."""
    try:
        data: bytes | None = (track_dir / PRESENTATION_NAME).read_bytes()
    except OSError:
        data = None
    names = frozenset(
        p.relative_to(track_dir).as_posix() for p in track_dir.rglob("*") if p.is_file()
    )
    return Previous(read_presentation(data), names)


def encryption_options(options: PackageOptions) -> tuple[tuple[str, str], ...]:
    """The fingerprint options the encryption adds (none for clear output), so that a
    change of scheme, key layout or chosen renditions repackages the track."""
    return options.encryption.fingerprint_options() if options.encryption is not None else ()


def decide_for_folder(source: Path, track_dir: Path, options: PackageOptions) -> Decision:
    """The decision for packaging ``source`` into the local ``track_dir``.

    ``options.fingerprint`` is used when the batch made it (it knows the source's
    URL), else the source is hashed here; with ``options.name_tag`` set the batch has
    decided already, against a remote destination, and this only carries it out."""
    if options.fingerprint is not None:  # made with encryption_options(options) already
        fingerprint = options.fingerprint
    else:
        fingerprint = fingerprint_source(
            source,
            str(source),
            ladder=options.ladder,
            segment_duration=options.segment_duration,
            single_file=options.single_file,
            extra_options=encryption_options(options),
        )
    if options.name_tag is not None:
        return Decision(
            fingerprint, Verdict.REPACKAGE, forced=options.force, name_tag=options.name_tag
        )
    return decide(fingerprint, local_previous(track_dir), force=options.force)
