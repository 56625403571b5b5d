"""The closed label sets of the origin's labelled counters, and their presetting: every
series of such a counter exists from the start, at 0 (see :mod:`cadenza.origin.metrics`)."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Final

from cadenza.abr.controller import Reason
from cadenza.abr.delivery import Delivery
from cadenza.abr.policy import GuidanceSource
from cadenza.origin.core.request import Handover
from cadenza.origin.errors import (
    AccessDeniedError,
    AdminTokenInvalidError,
    AdminTokenMissingError,
    OriginError,
    StorageTimeoutError,
    StorageUnavailableError,
)
from cadenza.origin.steering_policy import SteeringArg
from cadenza.store.local import LocalStore
from cadenza.store.s3read import S3Store

if TYPE_CHECKING:
    from cadenza.origin.metrics import Metrics

# The closed label sets that are string literals at their call sites.
CACHE_RESULTS: Final = ("hit", "miss", "collapsed", "stale")  # origin.cache.HotCache.get
BEACON_KINDS: Final = ("request", "post")
BEACON_RESULTS: Final = (
    "ok",
    "malformed",
    "no_session",
    "store_error",
    "invalid",
    "too_large",
    "timeout",
    "rate_limited",
)
REDIS_STORES: Final = ("sessions", "population")
# The reason /v1/auth counts for a path that is not in canonical form.
BAD_PATH_REASON: Final = "bad_path"
# ``rendering`` reports a damaged presentation.json as backend "data".
DATA_BACKEND: Final = "data"


def _codes(error: type[OriginError]) -> set[str]:
    """The ``code`` of ``error`` and of every subclass of it."""
    codes = {error.code}
    for subclass in error.__subclasses__():
        codes |= _codes(subclass)
    return codes


def preset_closed_sets(metrics: Metrics, *, redis: bool) -> None:
    # Imported here: origin.access reads the app keys, which name this module's Metrics.
    from cadenza.origin.access import IP_LIMITED_ROUTES

    metrics.preset(metrics.cache_lookups, [(r,) for r in CACHE_RESULTS])
    metrics.preset(metrics.beacons, itertools.product(BEACON_KINDS, BEACON_RESULTS))
    metrics.preset(metrics.steered_manifests, [(s.value,) for s in GuidanceSource])
    metrics.preset(metrics.abr_decisions, [(r.value,) for r in Reason])
    metrics.preset(metrics.abr_deliveries, [(d.value,) for d in Delivery])
    metrics.preset(metrics.fast_path_handovers, [(h.value,) for h in Handover])
    metrics.preset(metrics.steering_malformed, [(a.value,) for a in SteeringArg])
    metrics.preset(metrics.ip_rate_limited, [(r,) for r in sorted(IP_LIMITED_ROUTES | {"other"})])
    reasons = _codes(AccessDeniedError) | {
        AdminTokenMissingError.code,
        AdminTokenInvalidError.code,
        BAD_PATH_REASON,
    }
    metrics.preset(metrics.access_denied, [(r,) for r in sorted(reasons)])
    kinds = (StorageUnavailableError.kind, StorageTimeoutError.kind)
    storage = [(b, k) for b in (LocalStore.name, S3Store.name) for k in kinds]
    metrics.preset(metrics.storage_errors, [*storage, (DATA_BACKEND, StorageUnavailableError.kind)])
    if redis:
        metrics.preset(metrics.redis_fallbacks, [(s,) for s in REDIS_STORES])
