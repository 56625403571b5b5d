"""``cadenza package --cluster tcp://SCHEDULER:8786``: the batch on a Dask cluster.

One task per track, each the same :class:`~cadenza.packager.batch.TrackWork` call that a
local batch runs in a child process: fetch the source, package it into the
worker's own staging folder, upload it (for ``s3://`` output), clean up.  The
client gathers results as tasks finish (``as_completed``) and hands each to the
batch, which reports it and rewrites ``batch-report.json``.  A track that fails
is a result like any other; a task that raised, or whose worker died more often
than the scheduler allows (``KilledWorker``), is reported as that track's
failure.  The batch has already skipped the tracks that are complete, so a
rerun resumes.

Dask is the optional ``cluster`` extra (``pip install 'cadenza[cluster]'``) and is
imported only here, only when ``--cluster`` is given.  ``--track-timeout`` is not
enforced on a cluster: Dask's worker processes are daemonic and cannot fork a
child per track.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Final

from cadenza.packager.catalogue import TrackInput
from cadenza.packager.errors import ClusterError
from cadenza.packager.track import TrackResult

CONNECT_TIMEOUT_S: Final = 30.0


def run_on_cluster(
    address: str,
    todo: Sequence[TrackInput],
    work: Callable[[TrackInput], TrackResult],
    done: Callable[[TrackResult], None],
    *,
    connect_timeout_s: float | None = None,
) -> None:
    """Run ``work(item)`` for every item as a task on the cluster at ``address``."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ClusterError(
            address, "Dask is not installed: pip install 'cadenza[cluster]'"
        ) from None
    try:
        client = Client(
            address, timeout=connect_timeout_s or CONNECT_TIMEOUT_S, set_as_default=False
        )
    except (OSError, TimeoutError, ValueError) as exc:  # ValueError: an unknown scheme
        raise ClusterError(address, f"cannot connect to the scheduler: {exc}") from exc
    run = uuid.uuid4().hex[:8]
    with client:
        futures = {
            client.submit(work, item, key=f"cadenza-package-{item.track_id}-{run}", pure=False): (
                item
            )
            for item in todo
        }
        for future in as_completed(futures, loop=client.loop):
            item = futures.pop(future)
            try:
                result: TrackResult = future.result()
            except Exception as exc:
                result = TrackResult(
                    input=item.source,
                    track_id=item.track_id,
                    status="failed",
                    error=f"{item.source}: the cluster task failed: {type(exc).__name__}: {exc}",
                )
            future.release()
            done(result)
