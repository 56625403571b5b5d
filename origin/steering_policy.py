"""The rules of content steering, as pure functions: what a player's steering
request says (:func:`parse_steering_query`) and the pathway priority it gets
(:func:`rank_pathways`).  The steering server (:mod:`cadenza.origin.content_steering`)
and the probes (:mod:`cadenza.origin.pathway_health`) feed them.

The query arguments are those of HLS Content Steering 1.2 (``_HLS_pathway``,
``_HLS_throughput``) and of DASH-IF content steering (``_DASH_pathway``,
``_DASH_throughput``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

MAX_ARG_CHARS: Final = 1024
MAX_THROUGHPUT_BPS: Final = 10**12


class PlayerProtocol(StrEnum):
    """Which steering dialect a request speaks (a metrics label too)."""

    HLS = "hls"
    DASH = "dash"
    UNKNOWN = "unknown"


class SteeringArg(StrEnum):
    """A player argument that can be malformed (``cadenza_steering_malformed_args_total``)."""

    PATHWAY = "pathway"
    THROUGHPUT = "throughput"


class Weighted(Protocol):
    """A pathway or a pathway clone, as ranking sees it."""

    @property
    def id(self) -> str: ...

    @property
    def weight(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Health:
    """What the probes say of one pathway: ``up``, and when it last came back up
    after being down (``None``: never went down), in monotonic seconds."""

    up: bool
    recovered_at_s: float | None = None


def rank_pathways(
    pathways: Sequence[Weighted],
    health: Mapping[str, Health],
    current: str | None,
    throughput_bps: Mapping[str, int],
    now_s: float,
    *,
    recover_hold_s: float = 0.0,
) -> list[str]:
    """The ``PATHWAY-PRIORITY`` for one player, best first.

    1. Healthy pathways first, unhealthy ones last.  A pathway without a probe
       result yet counts as healthy.
    2. A pathway that came back up less than ``recover_hold_s`` ago ranks after
       every steady healthy one (but before the unhealthy ones), unless the
       player is on it: a flapping CDN does not pull players back and forth.
    3. Within a tier, higher weight first.
    4. Among equal weights, the player's current pathway first (so it does not
       switch for nothing), then the higher throughput the player reported on
       a pathway (DASH reports one per pathway it used), then the configured order.
    """

    def key(item: tuple[int, Weighted]) -> tuple[int, int, int, int, int]:
        index, pathway = item
        state = health.get(pathway.id)
        is_current = pathway.id == current
        if state is not None and not state.up:
            tier = 2
        elif (
            state is not None
            and state.recovered_at_s is not None
            and now_s - state.recovered_at_s < recover_hold_s
            and not is_current
        ):
            tier = 1
        else:
            tier = 0
        return (
            tier,
            -pathway.weight,
            0 if is_current else 1,
            -throughput_bps.get(pathway.id, 0),
            index,
        )

    return [pathway.id for _, pathway in sorted(enumerate(pathways), key=key)]


# -- the player's query arguments -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class SteeringQuery:
    """What a steering request says about the player."""

    protocol: PlayerProtocol
    current: str | None
    throughput_bps: dict[str, int]
    malformed: tuple[SteeringArg, ...]  # once per bad value


def _throughput(text: str) -> int | None:
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= MAX_THROUGHPUT_BPS else None


def parse_steering_query(
    query: Mapping[str, str], known: Collection[str], *, protocol_hint: str | None = None
) -> SteeringQuery:
    """Read ``_HLS_pathway`` (one id; hls.js sends ``.`` before it knows one)
    with ``_HLS_throughput`` (bits/s), or ``_DASH_pathway`` (a quoted,
    comma-separated list of the service locations used since the last request,
    the last one taken as current) with ``_DASH_throughput`` (bits/s for each
    of them, possibly empty).  Whatever does not parse, or names a pathway that
    is not configured, is left out and listed in ``malformed``."""
    malformed: list[SteeringArg] = []
    throughput: dict[str, int] = {}
    current: str | None = None
    protocol = PlayerProtocol.UNKNOWN
    if protocol_hint in (PlayerProtocol.HLS, PlayerProtocol.DASH):
        protocol = PlayerProtocol(protocol_hint)
    hls_pathway = query.get("_HLS_pathway")
    hls_throughput = query.get("_HLS_throughput")
    dash_pathway = query.get("_DASH_pathway")
    dash_throughput = query.get("_DASH_throughput")
    if hls_pathway is not None or hls_throughput is not None:
        protocol = PlayerProtocol.HLS
        if hls_pathway is not None and hls_pathway != ".":
            if len(hls_pathway) <= MAX_ARG_CHARS and hls_pathway in known:
                current = hls_pathway
            else:
                malformed.append(SteeringArg.PATHWAY)
        if hls_throughput is not None:
            value = _throughput(hls_throughput) if len(hls_throughput) <= 32 else None
            if value is None:
                malformed.append(SteeringArg.THROUGHPUT)
            elif current is not None:
                throughput[current] = value
    elif dash_pathway is not None or dash_throughput is not None:
        protocol = PlayerProtocol.DASH
        entries: list[str | None] = []
        if dash_pathway is not None:
            if len(dash_pathway) > MAX_ARG_CHARS:
                malformed.append(SteeringArg.PATHWAY)
            else:
                for raw in dash_pathway.strip().strip('"').split(","):
                    name = raw.strip().strip('"')
                    if not name:
                        entries.append(None)
                    elif name in known:
                        entries.append(name)
                        current = name
                    else:
                        entries.append(None)
                        malformed.append(SteeringArg.PATHWAY)
        if dash_throughput is not None and len(dash_throughput) <= MAX_ARG_CHARS:
            for index, raw in enumerate(dash_throughput.split(",")):
                if not raw.strip():
                    continue  # dash.js leaves a pathway without samples empty
                value = _throughput(raw)
                if value is None or index >= len(entries):
                    malformed.append(SteeringArg.THROUGHPUT)
                    continue
                location = entries[index]
                if location is not None:
                    throughput[location] = value
        elif dash_throughput is not None:
            malformed.append(SteeringArg.THROUGHPUT)
    return SteeringQuery(protocol, current, throughput, tuple(malformed))
