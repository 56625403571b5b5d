"""``cadenza gc ROOT [--grace S] [--dry-run]``: remove the files of earlier packagings.

A republished track keeps its earlier packagings' files beside the new ones (they have
other version-tagged names: :attr:`cadenza.manifests.model.Rendition.name_tag`), so a
player or cache that still holds an old playlist finds every file it names. This
command removes them once that can no longer happen. In each track folder below ROOT
(a local folder or ``s3://BUCKET/PREFIX``) a file is removed only when all of these
hold:

- it is a rendition file the packager writes (``<rendition>/init*.mp4``,
  ``seg-*.m4s``, ``media*.mp4``, ``playlist*.m3u8``): nothing else is ever touched;
- the track's ``presentation.json`` is complete and does not name it (the master
  playlist and MPD are rendered from it, and its media playlists name only its own
  files, so no published manifest names it either);
- the track's current packaging was published at least ``--grace`` seconds ago (the
  time of its ``presentation.json``), so every playlist fetched before the switch
  has had that long to play out;
- the file itself is at least ``--grace`` seconds old, so a packaging being uploaded
  right now (its files present, its ``presentation.json`` not yet) is left alone.

A track whose master playlist or MPD is newer than its ``presentation.json`` (an
upload stopped between the two) is skipped and named: re-run ``cadenza package``.
Hidden folders are never entered: the working folders, and the just-in-time
write-back area (``ROOT/.jit``, :mod:`cadenza.packager.jit.writeback`), whose
segments stay published for as long as their source lives.
The default grace, a day, outlasts any playlist cache and a listener's session.

Exit status: 0 when done, 1 when a deletion or a read fails, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from cadenza.manifests.model import MASTER_NAME, MPD_NAME, PRESENTATION_NAME, Presentation
from cadenza.packager.errors import OutputError, PackagerError, store_errors
from cadenza.packager.fingerprint import current_names, read_presentation
from cadenza.store.atomic import oserror_reason
from cadenza.store.complete import is_track_name
from cadenza.store.s3client import S3Settings
from cadenza.store.s3sweep import S3Sweeper, TrackFiles
from cadenza.store.s3url import is_s3_url, parse_s3_url

DEFAULT_GRACE_S: Final = 86_400.0
USAGE_ERROR: Final = 2
# The rendition files the packager writes, with or without a version tag.
RENDITION_FILE: Final = re.compile(
    r"[^/.][^/]*/(?:init|seg-[0-9]+|media|playlist)(?:-[0-9A-Za-z]{1,32})?\.(?:mp4|m4s|m3u8)"
)


@dataclass(frozen=True, slots=True)
class TrackSweep:
    """What gc does in one track: ``remove`` these names; ``waiting`` unreferenced files
    still within the grace period; ``skipped`` why the track is left alone."""

    track_id: str
    remove: tuple[str, ...] = ()
    waiting: int = 0
    skipped: str | None = None


def referenced_names(presentation: Presentation) -> set[str]:
    """Every rendition file the presentation names, relative to the track folder."""
    return {n for n in current_names(presentation) if "/" in n}


def plan_track(
    track_id: str,
    presentation: Presentation | None,
    files: Mapping[str, float],
    *,
    now_s: float,
    grace_s: float,
) -> TrackSweep:
    """Which of a track's ``files`` (name -> modification time) to remove now (see
    the module docstring); a pure function of its arguments, the clock included."""
    published_s = files.get(PRESENTATION_NAME)
    if presentation is None or published_s is None:
        return TrackSweep(track_id, skipped="not complete (no valid presentation.json)")
    if any(files.get(name, published_s) > published_s for name in (MASTER_NAME, MPD_NAME)):
        return TrackSweep(
            track_id, skipped="manifests newer than presentation.json: re-run cadenza package"
        )
    keep = referenced_names(presentation)
    unreferenced = sorted(n for n in files if RENDITION_FILE.fullmatch(n) and n not in keep)
    if now_s - published_s < grace_s:
        return TrackSweep(track_id, waiting=len(unreferenced))
    remove = tuple(n for n in unreferenced if now_s - files[n] >= grace_s)
    return TrackSweep(track_id, remove, waiting=len(unreferenced) - len(remove))


class Tree(Protocol):
    def tracks(self) -> dict[str, TrackFiles]: ...

    def read(self, track_id: str, name: str) -> bytes | None: ...

    def delete(self, track_id: str, names: tuple[str, ...]) -> None: ...


@dataclass(frozen=True, slots=True)
class LocalTree:
    root: Path

    def tracks(self) -> dict[str, TrackFiles]:
        found: dict[str, TrackFiles] = {}
        for folder in sorted(self.root.iterdir()):
            if not is_track_name(folder.name) or not folder.is_dir():
                continue
            files: TrackFiles = {}
            for path in folder.rglob("*"):
                relative = path.relative_to(folder).as_posix()
                if path.is_file() and not any(p.startswith(".") for p in relative.split("/")):
                    files[relative] = path.stat().st_mtime
            found[folder.name] = files
        return found

    def read(self, track_id: str, name: str) -> bytes | None:
        try:
            return (self.root / track_id / name).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, track_id: str, names: tuple[str, ...]) -> None:
        folder = self.root / track_id
        for name in names:
            path = folder / name
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise OutputError(path, f"cannot delete: {oserror_reason(exc)}") from exc
            parent = path.parent
            if parent != folder and not any(parent.iterdir()):
                parent.rmdir()  # a rendition the current ladder no longer has


def sweep(tree: Tree, *, now_s: float, grace_s: float, dry_run: bool) -> Iterator[TrackSweep]:
    """Plan and (unless ``dry_run``) carry out gc, one track at a time."""
    for track_id, files in tree.tracks().items():
        data = tree.read(track_id, PRESENTATION_NAME) if PRESENTATION_NAME in files else None
        plan = plan_track(track_id, read_presentation(data), files, now_s=now_s, grace_s=grace_s)
        if plan.remove and not dry_run:
            tree.delete(track_id, plan.remove)
        yield plan


def _grace(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "root", metavar="ROOT", help="the packaged tracks: DIR or s3://BUCKET/PREFIX"
    )
    parser.add_argument(
        "--grace",
        type=_grace,
        default=DEFAULT_GRACE_S,
        metavar="S",
        help="remove an earlier packaging's files only S seconds after its replacement was "
        f"published (default: {DEFAULT_GRACE_S:g})",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be removed; remove nothing"
    )


def _tree(root: str) -> Tree:
    if is_s3_url(root):
        settings = S3Settings(endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
        with store_errors():
            return S3Sweeper(parse_s3_url(root, prefix=True), settings)
    path = Path(root)
    if not path.is_dir():
        raise OutputError(path, "is not a directory")
    return LocalTree(path)


def run(args: argparse.Namespace) -> int:
    try:
        tree = _tree(args.root)
    except (PackagerError, ValueError) as exc:
        print(f"cadenza gc: {exc}", file=sys.stderr)
        return USAGE_ERROR
    verb = "would remove" if args.dry_run else "removed"
    removed = waiting = tracks = 0
    try:
        with store_errors():
            for plan in sweep(tree, now_s=time.time(), grace_s=args.grace, dry_run=args.dry_run):
                tracks += 1
                if plan.skipped:
                    print(f"cadenza gc: {plan.track_id}: skipped: {plan.skipped}", file=sys.stderr)
                for name in plan.remove:
                    print(f"{verb} {plan.track_id}/{name}")
                removed += len(plan.remove)
                waiting += plan.waiting
    except PackagerError as exc:
        print(f"cadenza gc: {exc}", file=sys.stderr)
        return 1
    done = "would be removed" if args.dry_run else "removed"
    print(
        f"cadenza gc: {removed} files {done} in {tracks} tracks; "
        f"{waiting} kept within the {args.grace:g} s grace period",
        file=sys.stderr,
    )
    return 0
