"""One playback session folded from CMCD (CTA-5004).

:func:`apply_cmcd` is pure: it takes a session's state (or None), one parsed
CMCD payload and the time, and returns the new state and what changed (for
metrics); :mod:`cadenza.abr.session_origin` folds in the origin's own decisions
and timing.  Population priors are
:mod:`cadenza.abr.population`'s.  Where states are kept (in process, in Redis) is
the origin's business.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, cast

from cadenza.abr.cmcd import Cmcd
from cadenza.abr.controller import ControllerState, Reason
from cadenza.abr.controller_inputs import MTP_ZERO_KBPS
from cadenza.abr.delivery import Delivery as DeliveryMode
from cadenza.abr.estimator import DualEwma
from cadenza.abr.frozen import fast_init
from cadenza.abr.policy import SessionView

# Weight of one ``mtp`` sample when the beacon gives no object duration.
DEFAULT_SAMPLE_WEIGHT_S: Final = 1.0
# CMCD object types that carry media (audio, video, muxed, or unspecified).
MEDIA_OBJECT_TYPES: Final = frozenset({"a", "v", "av", ""})
SID_MAX_CHARS: Final = 128
# The origin's decisions a session keeps (the latest), for its report.
DECISIONS_KEPT: Final = 64


@fast_init
@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One segment the origin decided (``?abr=origin``): which rung, why, and how it
    was answered (None: not recorded, as by a replica of an earlier version)."""

    segment: int
    rung: str  # the rendition id
    bitrate_bps: int
    reason: Reason
    # How the segment was answered (:class:`cadenza.abr.delivery.Delivery`).
    delivery: DeliveryMode | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "segment": self.segment,
            "rung": self.rung,
            "bitrate_bps": self.bitrate_bps,
            "reason": self.reason.value,
            "delivery": None if self.delivery is None else self.delivery.value,
        }


@dataclass(frozen=True, slots=True)
class SessionState:
    sid: str
    first_seen_s: float
    last_seen_s: float
    requests: int = 0
    beacons: int = 0
    cid: str | None = None
    track: str | None = None
    network_key: str | None = None
    estimator: DualEwma = field(default_factory=DualEwma.create)
    throughput_samples: int = 0
    last_mtp_kbps: int | None = None
    last_bl_ms: int | None = None
    last_br_kbps: int | None = None
    bitrate_time_kbps_s: float = 0.0  # integral of br over reported object durations
    bitrate_time_s: float = 0.0
    switches: int = 0
    stalls: int = 0
    started: bool = False
    # The file name the latest media request's CMCD ``nor`` named (its next object),
    # and whether that request carried ``su`` (the player waiting): what tells a stall
    # of a player that sends no ``bs`` (:func:`_stalled`).
    next_object: str | None = None
    waiting: bool = False
    malformed: int = 0
    # The origin's own measurements (never the player's ``mtp``): its media
    # requests' timing and, when it served the bytes itself, TCP delivery rates.
    origin_rate_bps: float | None = None
    last_media_s: float | None = None
    last_media_bytes: int = 0
    # The connection (``address:port``) the origin last served a decided
    # segment's bytes on itself (``abr_delivery = direct``).
    direct_peer: str | None = None
    # Origin-decided playback: the controller's state and the latest decisions.
    controller: ControllerState | None = None
    decisions: tuple[DecisionRecord, ...] = ()

    @property
    def estimate_kbps(self) -> float | None:
        if not self.estimator.can_estimate:
            return None
        return self.estimator.estimate_bps() / 1000.0

    @property
    def mean_bitrate_kbps(self) -> float | None:
        if self.bitrate_time_s <= 0:
            return float(self.last_br_kbps) if self.last_br_kbps is not None else None
        return self.bitrate_time_kbps_s / self.bitrate_time_s

    def view(self) -> SessionView:
        mtp = self.last_mtp_kbps
        return SessionView(
            self.estimator,
            self.last_seen_s,
            self.stalls,
            self.last_bl_ms,
            None if mtp is None else (mtp or MTP_ZERO_KBPS) * 1000.0,
        )

    def qoe(self) -> float:
        """A per-session score in [0, 1]: quality held, minus stalls and switches.

        Mean bitrate against a 256 kb/s reference (audio quality saturates
        near it), then a multiplicative penalty per stall and per switch, so
        dashboards compare sessions on one number.
        """
        mean = self.mean_bitrate_kbps
        if mean is None:
            return 0.0
        quality = 1.0 - math.exp(-mean / 64.0)
        return quality * (0.8**self.stalls) * (0.97 ** min(self.switches, 100))

    def to_dict(self) -> dict[str, object]:
        estimate = self.estimate_kbps
        return {
            "sid": self.sid,
            "cid": self.cid,
            "track": self.track,
            "first_seen_s": round(self.first_seen_s, 3),
            "last_seen_s": round(self.last_seen_s, 3),
            "requests": self.requests,
            "beacons": self.beacons,
            "throughput_estimate_kbps": round(estimate, 1) if estimate is not None else None,
            "throughput_samples": self.throughput_samples,
            "last_mtp_kbps": self.last_mtp_kbps,
            "last_bl_ms": self.last_bl_ms,
            "last_br_kbps": self.last_br_kbps,
            "mean_bitrate_kbps": (
                round(self.mean_bitrate_kbps, 1) if self.mean_bitrate_kbps is not None else None
            ),
            "switches": self.switches,
            "stalls": self.stalls,
            "started": self.started,
            "qoe": round(self.qoe(), 4),
            "network_key": self.network_key,
            "malformed_values": self.malformed,
            "origin_throughput_kbps": (
                round(self.origin_rate_bps / 1000.0, 1) if self.origin_rate_bps else None
            ),
            "decisions": [d.to_dict() for d in self.decisions],
        }


_KEEP: Final = object()  # "this field unchanged"


def _write_evolve() -> Callable[..., SessionState]:
    """``dataclasses.replace`` for :class:`SessionState`, at a sixth of its cost (it
    runs for every decided segment): written out for the class's fields, as
    ``dataclasses`` writes ``__init__``, each field a keyword that defaults to
    unchanged, each slot set through its own descriptor (what the constructor's
    ``object.__setattr__`` ends up calling, without the lookup by name).
    Copying the slots is what the constructor does for this class (no
    ``__post_init__``, no init-only field); a name that is no field raises
    ``TypeError``, as ``replace`` does."""
    names = SessionState.__slots__
    lines = [f"def evolve(state, *, {', '.join(f'{name}=_KEEP' for name in names)}):"]
    lines.append("    copy = _new(SessionState)")
    lines += [f"    _set_{n}(copy, state.{n} if {n} is _KEEP else {n})" for n in names]
    lines.append("    return copy")
    scope: dict[str, object] = {"_new": object.__new__, "_KEEP": _KEEP}
    scope["SessionState"] = SessionState
    for name in names:
        scope[f"_set_{name}"] = getattr(SessionState, name).__set__
    exec("\n".join(lines), scope)
    return cast(Callable[..., SessionState], scope["evolve"])


# The session with the given fields changed (``dataclasses.replace``, faster).
evolve: Final = _write_evolve()
_NOTHING: Final[Mapping[str, object]] = {}


@fast_init
@dataclass(frozen=True, slots=True)
class Changes:
    """What one payload changed, for the metrics at the edge."""

    new_session: bool = False
    switched: bool = False
    stalled: bool = False
    throughput_kbps: float | None = None
    bitrate_kbps: int | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """An object's size and how long it took to arrive, when somebody measured it."""

    size_bytes: int
    duration_s: float


def _named_next(nor: str | None) -> str | None:
    """The file name CMCD ``nor`` names: its last path segment, without a query
    (CTA-5004 gives a path relative to the request; in v1, hls.js percent-encodes it)."""
    if not nor:
        return None
    # Not urlsplit: a bracket it reads as a bad IPv6 host would raise on hostile input.
    path = urllib.parse.unquote(nor).partition("?")[0].partition("#")[0]
    return path.rpartition("/")[2] or None


def _stalled(state: SessionState, values: Mapping[str, object], su: bool, expected: bool) -> bool:
    """Whether a payload starts a stall: the player says so (``bs``, CTA-5004; v2
    ``sta=r``), unless its previous request already waited in it; or it asks, while
    waiting (``su``) in a session that has played, for the very object its previous
    request named as the next (``nor``: ``expected``), after a request that did not
    wait.  CTA-5004 sends ``su`` after a seek too, but a seek asks for another object
    than the next.  hls.js 1.7.4 sets ``bs`` only on video, init and muxed objects:
    for audio, this is the only word of its stalls."""
    if values.get("bs") is True or str(values.get("sta", "")) == "r":
        return not state.waiting
    return su and expected and state.started and not state.waiting


def apply_cmcd(
    state: SessionState | None,
    cmcd: Cmcd,
    now_s: float,
    *,
    sid: str,
    is_request: bool,
    track: str | None = None,
    network_key: str | None = None,
    delivery: Delivery | None = None,
    also: Callable[[SessionState], Mapping[str, object]] | None = None,
    object_name: str | None = None,
) -> tuple[SessionState, Changes]:
    """Fold one CMCD payload into a session (CTA-5004 keys ``mtp``, ``bl``,
    ``br``, ``bs``, ``su``, ``cid``, ``d``, ``ot``; v2 ``sta`` play states).

    ``also``: more fields of the new state, computed from the state before this
    payload (a new session's, for none), such as
    :func:`cadenza.abr.session_origin.decision_fields`, which
    reads none of the fields a payload changes; the session is copied once.
    ``object_name``: the requested file's name (its URL's last path segment), for a
    request; a stall is what :func:`_stalled` says starts one."""
    new_session = state is None
    if state is None:
        state = SessionState(sid=sid, first_seen_s=now_s, last_seen_s=now_s)
    more = also(state) if also is not None else _NOTHING
    estimator = state.estimator
    throughput_kbps: float | None = None
    samples = state.throughput_samples
    values = cmcd.values
    integer = cmcd.integer
    duration_ms = integer("d")
    weight_s = duration_ms / 1000.0 if duration_ms else DEFAULT_SAMPLE_WEIGHT_S
    mtp = integer("mtp")
    if mtp is not None and mtp >= 0:
        # A 0 is a measurement too: a link under 50 kb/s (CTA-5004 rounds mtp to 100 kb/s).
        throughput_kbps = float(mtp) if mtp > 0 else MTP_ZERO_KBPS
        estimator = estimator.sample_rate(throughput_kbps * 1000.0, weight_s)
        samples += 1
    if delivery is not None and delivery.size_bytes > 0 and delivery.duration_s > 0:
        estimator = estimator.sample_download(delivery.duration_s, delivery.size_bytes)
        throughput_kbps = 8.0 * delivery.size_bytes / max(delivery.duration_s, 0.05) / 1000.0
        samples += 1
    object_type = str(values.get("ot", ""))
    br = integer("br")
    switched = False
    bitrate_time_kbps_s = state.bitrate_time_kbps_s
    bitrate_time_s = state.bitrate_time_s
    last_br = state.last_br_kbps
    if br is not None and br > 0 and object_type in MEDIA_OBJECT_TYPES:
        switched = last_br is not None and br != last_br
        last_br = br
        if duration_ms:
            bitrate_time_kbps_s += br * duration_ms / 1000.0
            bitrate_time_s += duration_ms / 1000.0
    media = object_type in MEDIA_OBJECT_TYPES and object_name is not None
    su = values.get("su") is True
    stalled = _stalled(state, values, su, media and object_name == state.next_object)
    bl = integer("bl")
    updated = evolve(
        state,
        last_seen_s=max(state.last_seen_s, now_s),
        requests=state.requests + (1 if is_request else 0),
        beacons=state.beacons + (0 if is_request else 1),
        cid=cmcd.string("cid") or state.cid,
        track=track or state.track,
        network_key=network_key or state.network_key,
        estimator=estimator,
        throughput_samples=samples,
        last_mtp_kbps=mtp if mtp is not None else state.last_mtp_kbps,
        last_bl_ms=bl if bl is not None else state.last_bl_ms,
        last_br_kbps=last_br,
        bitrate_time_kbps_s=bitrate_time_kbps_s,
        bitrate_time_s=bitrate_time_s,
        switches=state.switches + (1 if switched else 0),
        stalls=state.stalls + (1 if stalled else 0),
        started=state.started or not su,
        next_object=_named_next(cmcd.string("nor")) if media else state.next_object,
        waiting=su if media else state.waiting,
        malformed=state.malformed + len(cmcd.malformed),
        **more,
    )
    changes = Changes(
        new_session=new_session,
        switched=switched,
        stalled=stalled,
        throughput_kbps=throughput_kbps,
        bitrate_kbps=br if br is not None and object_type in MEDIA_OBJECT_TYPES else None,
    )
    return updated, changes


def valid_sid(sid: str) -> bool:
    return 0 < len(sid) <= SID_MAX_CHARS and sid.isprintable()
