"""Put a just-in-time store together from its options: the sources (a folder, or an
``s3://`` prefix with its download cache), the write-back area, the planner, the build
pool and the promoter, around the inner store the origin reads ROOT with."""

from __future__ import annotations

from pathlib import Path

from cadenza.packager.jit.builder import BuildPool
from cadenza.packager.jit.config import JitOptions
from cadenza.packager.jit.events import CountingEvents
from cadenza.packager.jit.promote import Promoter
from cadenza.packager.jit.sources import LocalSources, S3Sources, Sources
from cadenza.packager.jit.store import JitStore
from cadenza.packager.jit.tracks import Planner
from cadenza.packager.jit.writeback import S3WriteBack, WriteBack
from cadenza.packager.ladder import load_ladder
from cadenza.store.api import TrackReader
from cadenza.store.s3client import S3Settings
from cadenza.store.s3url import is_s3_url, parse_s3_url

WRITEBACK_FOLDER = ".jit"


def make_writeback(options: JitOptions, root: str, *, s3_endpoint_url: str | None) -> WriteBack:
    """``jit_writeback_dir``, else ``ROOT/.jit`` (a folder, or a prefix of an ``s3://``
    ROOT); nothing written when ``jit_writeback`` is off."""
    if not options.jit_writeback:
        return WriteBack(None)
    if options.jit_writeback_dir:
        return WriteBack(Path(options.jit_writeback_dir))
    if not is_s3_url(root):
        return WriteBack(Path(root) / WRITEBACK_FOLDER)
    prefix = parse_s3_url(root, prefix=True).join(WRITEBACK_FOLDER)
    return S3WriteBack(prefix, S3Settings(endpoint_url=s3_endpoint_url))


def make_sources(options: JitOptions, *, s3_endpoint_url: str | None) -> Sources:
    if is_s3_url(options.sources):
        return S3Sources(
            options.sources,
            S3Settings(endpoint_url=s3_endpoint_url),
            cache_dir=Path(options.jit_source_cache_dir),
            cache_max_bytes=options.jit_source_cache_max_bytes,
            listing_ttl_s=options.jit_listing_ttl_s,
        )
    return LocalSources(Path(options.sources), options.jit_listing_ttl_s)


def build_jit_store(
    inner: TrackReader,
    options: JitOptions,
    *,
    root: str,
    s3_endpoint_url: str | None = None,
    retry_after_s: int = 1,
) -> JitStore:
    """The store (raises :class:`~cadenza.packager.errors.LadderError` for a ladder
    that cannot be read)."""
    events = CountingEvents()
    writeback = make_writeback(options, root, s3_endpoint_url=s3_endpoint_url)
    planner = Planner(
        make_sources(options, s3_endpoint_url=s3_endpoint_url),
        writeback,
        ladder=load_ladder(options.jit_ladder),
        segment_duration=options.jit_segment_duration,
        negative_ttl_s=options.jit_negative_ttl_s,
        events=events,
    )
    promoter = None
    if options.jit_promote_after_requests > 0 and not is_s3_url(root):
        promoter = Promoter(
            Path(root),
            after_requests=options.jit_promote_after_requests,
            ladder_spec=options.jit_ladder,
            segment_duration=options.jit_segment_duration,
            writeback=writeback,
            events=events,
        )
    pool = BuildPool(
        options.jit_workers, options.jit_queue_max, events, retry_after_s=retry_after_s
    )
    return JitStore(
        inner,
        planner,
        pool,
        events=events,
        promoter=promoter,
        built_cache_bytes=options.jit_built_cache_bytes,
        read_ahead=options.jit_read_ahead,
    )
