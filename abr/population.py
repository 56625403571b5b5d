"""Population priors: the sessions that share a coarse network key, summarised.

:func:`network_key_for` names a session's population (the ``ECT`` client hint, else
its /24 or /48 prefix); :func:`population_of` summarises the throughput estimates of
a population into the prior the guidance policy and the controller read;
:func:`final_estimates_bps` folds a beacon log into such estimates (for ``cadenza
ladder recommend --beacons``).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import math
from collections.abc import Mapping, Sequence

from cadenza.abr.cmcd import parse_cmcd
from cadenza.abr.cmcd_json import from_json_object
from cadenza.abr.errors import BeaconLogError
from cadenza.abr.estimator import DualEwma
from cadenza.abr.policy import Population
from cadenza.abr.session import SessionState, apply_cmcd


def network_key_for(remote: str | None, headers: Mapping[str, str]) -> str | None:
    """A coarse population key: the ``ECT`` client hint, else the /24 or /48 prefix."""
    hint = headers.get("ECT")
    if hint is not None:
        ect = hint.strip().lower()
        if ect in ("slow-2g", "2g", "3g", "4g"):
            return f"ect:{ect}"
    if not remote:
        return None
    return _prefix_key(remote)


@functools.lru_cache(maxsize=65_536)
def _prefix_key(remote: str) -> str | None:
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return None
    prefix = 24 if address.version == 4 else 48
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    return f"net:{network}"


def percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def population_of(key: str, estimates_bps: list[float]) -> Population:
    ordered = sorted(estimates_bps)
    p10, p25, p50, p90 = (percentile(ordered, q) for q in (10, 25, 50, 90))
    return Population(key, len(ordered), p10, p25, p50, p90)


def final_estimates_bps(lines: Sequence[str]) -> list[float]:
    """Each session's final throughput estimate (bit/s) from a beacon log, in the order
    the sessions first appear.

    A line is one CMCD payload (CTA-5004 text) or a JSON object of CMCD keys;
    blank lines and payloads without ``sid`` are skipped.  Line ``n`` is folded at
    time ``n`` (a log carries no clock).  Sessions that never measured a throughput
    are left out.  Raises :class:`BeaconLogError` on a line that starts like JSON
    (``{``) but does not parse.
    """
    sessions: dict[str, SessionState] = {}
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        if text.startswith("{"):
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise BeaconLogError(number, f"not JSON: {exc}") from None
            cmcd = from_json_object(data)  # text that starts with "{" is an object
        else:
            cmcd = parse_cmcd(text)
        sid = cmcd.string("sid")
        if not sid:
            continue
        state, _ = apply_cmcd(sessions.get(sid), cmcd, float(number), sid=sid, is_request=False)
        sessions[sid] = state
    return [
        s.estimator.estimate_bps()
        for s in sessions.values()
        if s.estimator.can_estimate and s.estimator != DualEwma.create()
    ]
