"""The default delivery (``abr_delivery = adaptive``, docs/abr.md "Delivery") with real
players in headless Chromium: per decided segment the origin redirects to the chosen
rung's own URL while the link carries the ladder, and serves the bytes itself (``200``,
private) at the start and while the link is the limit.  Under the CDP throttling steps
of ``test_origin_decided`` (2 Mb/s, 150 kb/s, 2 Mb/s) hls.js, dash.js and Shaka get both kinds
of answer in one session, each the one the session report records, and play on: no
error, one contiguous buffered range, sound after every switch.  The switch logs, with
each decision's delivery, go to ``.e2e-results.json``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest

from tests.e2e.conftest import ROOT, Drive, merge_results
from tests.e2e.test_origin_decided import (
    GROUP_SEGMENT,
    LEVEL_MIN_RMS,
    RUNG_SEGMENT,
    Served,
    _by_segment,
    _decisions,
    drive_throttled,
    levels_after_switches,
    package_od_track,
)
from tests.origin.originproc import cadenza_serve

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RESULTS: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class Answered:
    """The player's latest request of one group segment: its status and, for a 302,
    the rung the redirect named."""

    status: int
    rung: str | None


@pytest.fixture(scope="module", autouse=True)
def _write_results() -> Iterator[None]:
    yield
    merge_results(RESULTS)


@pytest.fixture(scope="module")
def adaptive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The test track served by ``cadenza serve`` with its default delivery."""
    folder = tmp_path_factory.mktemp("adaptive-delivery")
    out, presentation = package_od_track(folder)
    with cadenza_serve(str(out), folder, cwd=ROOT) as origin:
        # No edge in front: the bytes the origin serves are the session's, private.
        yield Served(origin.url, presentation)


def _answers(result: dict[str, Any]) -> dict[int, Answered]:
    """segment -> the latest answer to the player's request of that group segment: a
    302 to the same segment of a rung (its own URL, no query) or the bytes (200)."""
    found: dict[int, Answered] = {}
    for request in result["requests"]:
        match = GROUP_SEGMENT.search(urlsplit(request["url"]).path)
        if match is None:
            continue
        number = int(match.group(1))
        if request["status"] == 200:
            found[number] = Answered(200, None)
            continue
        assert request["status"] == 302, request
        target = urlsplit(urljoin(request["url"], request["location"]))
        rung = RUNG_SEGMENT.search(target.path)
        assert rung is not None and not target.query, request
        assert int(rung.group(2)) == number, request
        found[number] = Answered(302, rung.group(1))
    return found


@pytest.mark.parametrize("player", ["hls", "dash", "shaka"])
def test_adaptive_delivery_redirects_on_a_fast_link_and_serves_on_a_slow_one(
    drive: Drive, adaptive: Served, player: str
) -> None:
    sid = f"adaptive-{player}"
    result = drive_throttled(drive, adaptive, player, sid)
    final = result["final"]
    decisions = _by_segment(_decisions(adaptive, sid))
    answers = _answers(result)
    steps = {s["name"]: s for s in result["steps"]}
    log = [
        {key: d[key] for key in ("segment", "rung", "reason", "delivery")}
        | {"status": answers[d["segment"]].status if d["segment"] in answers else None}
        for d in decisions
    ]
    RESULTS[f"adaptive delivery {player} throttled"] = {
        "steps": result["steps"],
        "decisions": log,
        "errors": final["errors"],
        "current_time": final["current_time"],
    }
    print(
        f"\n{player} adaptive: "
        + " ".join(f"{e['segment']}:{e['rung']}/{e['delivery']}" for e in log)
    )

    assert final["fatal"] is None, final["errors"]
    holes = [s for s in result["samples"] if len(s["buffered"]) > 1]
    assert not holes, f"holes in the buffer: {holes[:3]}"
    assert "end" in steps, f"playback stopped at {final['current_time']:.1f} s: {list(steps)}"
    # Each answer the player got is the one the session records: the bytes for a
    # direct decision, a redirect to the decided rung for a redirected one.
    for decision in decisions:
        answered = answers.get(decision["segment"])
        if answered is None:
            continue  # decided after the player stopped asking (the run's end)
        if decision["delivery"] == "redirect":
            assert (answered.status, answered.rung) == (302, decision["rung"]), decision
        else:
            assert decision["delivery"] == "direct" and answered.status == 200, decision
    # Both kinds in one session: redirected while 2 Mb/s carried the top rung, served
    # directly on 150 kb/s (below 1.25 times the top rung), the start aside.
    slow, fast = steps["slow"]["last_segment"], steps["fast-again"]["last_segment"]
    on_slow = [d["delivery"] for d in decisions if slow + 1 < d["segment"] <= fast]
    before_slow = [d["delivery"] for d in decisions if 1 < d["segment"] <= slow]
    assert "direct" in on_slow, log
    assert "redirect" in before_slow, log
    # Sound in every segment switched to that the playhead passed.
    heard = levels_after_switches(adaptive, decisions, result)
    assert heard, log
    quiet = {n: level for n, level in heard.items() if level is None or level < LEVEL_MIN_RMS}
    assert not quiet, f"no sound after these switches: {quiet}"
