"""Origin-decided ABR (``?abr=origin``, docs/players.md "Origin-decided ABR") with real
players in headless Chromium: hls.js, dash.js and Shaka play the AAC switching group
whose every segment the origin decides and answers ``302`` to the chosen rung's own
segment URL (``abr_delivery = redirect``), directly from ``cadenza serve`` and through
the nginx edge we ship (which passes group URLs to the origin and caches the rung
segments the redirects name).  Under CDP network throttling steps (fast, slow, fast
again) the rung the origin serves, as its session report lists it, follows the link.

Every wait is a condition with a deadline: the throttling steps of drive.mjs fire when
the playhead and the origin's decisions say so, never at a wall-clock time, so a loaded
machine makes a run slower, not different.  Each run's switch log (segment, rung,
reason, playhead when the player asked) goes to ``.e2e-results.json``; ``-s`` prints a
summary."""

from __future__ import annotations

import bisect
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest

from cadenza.manifests.jsonio import presentation_from_json
from cadenza.manifests.ladder import LadderFormat, parse_ladder
from cadenza.manifests.model import Presentation, Rendition
from cadenza.packager.track import PackageOptions, package_track
from samples.make_sample import synthesize, write_audio
from tests.e2e.conftest import ROOT, Drive, free_port, merge_results
from tests.fetch import fetch
from tests.nginx_edge import NginxEdge
from tests.origin.originproc import cadenza_serve

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TRACK = "od-track"
TRACK_S = 80.0  # 40 segments: room for every throttling step with a slow playhead
SEGMENT_S = 2
LADDER = """
name = "origin-decided"
[[rung]]
codec = "aac"
bitrate_kbps = 64
[[rung]]
codec = "aac"
bitrate_kbps = 128
[[rung]]
codec = "aac"
bitrate_kbps = 256
[[rung]]
codec = "aac"
bitrate_kbps = 320
"""
GROUP = "aac"
AAC_RUNGS = ("aac-64k", "aac-128k", "aac-256k", "aac-320k")
MANIFESTS = {"hls": "master.m3u8", "dash": "manifest.mpd", "shaka": "manifest.mpd"}
PLAY_S = 6.0
LEVEL_MIN_RMS = 0.02  # the synthesized chords peak near 0.2 in every second
LEVEL_MARGIN_S = 0.25  # a segment is judged for sound away from its edges
# The throttling steps: a fast link, a slow one (above what the two lowest rungs need,
# below the two highest), the fast one again; one latency throughout.  Each step waits
# for the origin's decisions (drive.mjs polls the session report): the link slows once
# two high rungs in a row were served, and comes back once, after at least 4 s of play
# on the slow link, two low ones were.
FAST_KBPS = 2000
SLOW_KBPS = 150
LATENCY_MS = 40
HIGH_BPS = 256_000  # "high": one of the two top rungs
LOW_BPS = 128_000  # "low": one of the two lowest rungs
BUFFER_S = 8  # the players' forward buffer: decisions run this far ahead of the playhead
# Bounds on the origin's reaction, in segments decided after a step: generous (the
# player's own estimate, which CMCD mtp reports, moves over a few segments).
DROP_WITHIN_SEGMENTS = 6
RECOVER_WITHIN_SEGMENTS = 12
THROTTLE_TIMEOUT_S = 150
THROTTLE_STEPS: list[dict[str, Any]] = [
    {"name": "fast", "kbps": FAST_KBPS, "latency_ms": LATENCY_MS},
    {
        "name": "slow",
        "after_s": 3,
        "decided": {"min_bps": HIGH_BPS, "count": 2},
        "kbps": SLOW_KBPS,
        "latency_ms": LATENCY_MS,
    },
    {
        "name": "fast-again",
        "played_s": 4,
        "decided": {"max_bps": LOW_BPS, "count": 2},
        "kbps": FAST_KBPS,
        "latency_ms": LATENCY_MS,
    },
    {"name": "high-again", "decided": {"min_bps": HIGH_BPS}},
    # Play the segments decided meanwhile (one buffer ahead), so their sound is judged.
    {"name": "end", "played_s": BUFFER_S + 2 * SEGMENT_S + 1, "stop": True},
]
GROUP_SEGMENT = re.compile(rf"/{TRACK}/group-{GROUP}/seg-(\d+)\.m4s$")
RUNG_SEGMENT = re.compile(rf"/{TRACK}/(aac-\d+k)/seg-(\d+)\.m4s$")
RESULTS: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class Served:
    origin: str
    presentation: Presentation
    edge: NginxEdge | None = None  # the nginx edge in front, when one is

    def top(self) -> Rendition:
        return self.presentation.rendition(self.presentation.group(GROUP).rendition_ids[-1])

    def segment_span_s(self, number: int) -> tuple[float, float]:
        top = self.top()
        segment = next(s for s in top.segments if s.number == number)
        start_s = segment.start_ticks / top.timescale
        return start_s, start_s + segment.duration_ticks / top.timescale

    def buffered_segments(self, final: dict[str, Any]) -> list[int]:
        """The segments wholly inside the buffered range at the end of a run: the player
        had them all (the priming the edit list removes moves a range end a little
        before the segment's end on the decode timeline)."""
        end_s = final["buffered"][-1][1] if final["buffered"] else 0.0
        top = self.top()
        return [s.number for s in top.segments if self.segment_span_s(s.number)[1] <= end_s + 0.1]


@pytest.fixture(scope="module", autouse=True)
def _write_results() -> Iterator[None]:
    yield
    merge_results(RESULTS)


def package_od_track(folder: Path) -> tuple[Path, Presentation]:
    """The test track, packaged into ``folder/out``: the folder and its model."""
    source = folder / f"{TRACK}.flac"
    write_audio(source, synthesize(TRACK_S, 44100, 2), 44100)
    out = folder / "out"
    out.mkdir()
    ladder = parse_ladder(LADDER, fmt=LadderFormat.TOML)
    options = PackageOptions(ladder=ladder, segment_duration=Fraction(SEGMENT_S))
    result = package_track(source, out, options)
    assert result.status == "packaged", result.error
    presentation = presentation_from_json((out / TRACK / "presentation.json").read_bytes())
    assert presentation.group(GROUP).rendition_ids == AAC_RUNGS
    return out, presentation


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """An 80 s track in 2 s segments, four AAC rungs (one switching group), served by
    ``cadenza serve`` (redirect delivery) with the nginx edge in front."""
    folder = tmp_path_factory.mktemp("origin-decided")
    out, presentation = package_od_track(folder)
    with cadenza_serve(str(out), folder, cwd=ROOT, abr_delivery="redirect") as origin:
        edge = NginxEdge(folder / "edge", f"127.0.0.1:{origin.port}", free_port())
        edge.start()
        try:
            yield Served(origin.url, presentation, edge)
        finally:
            edge.stop()


def _decisions(served: Served, sid: str) -> list[dict[str, Any]]:
    status, _, body = fetch(f"{served.origin}/v1/sessions/{sid}")
    assert status == 200, body[:300]
    decisions: list[dict[str, Any]] = json.loads(body)["decisions"]
    return decisions


def _src(base: str, player: str, sid: str) -> str:
    return f"{base}/{TRACK}/{MANIFESTS[player]}?abr=origin&codec=aac&sid={sid}"


def _playhead_at(samples: list[dict[str, Any]], wall: float) -> float:
    """The playhead at a wall time: the latest sample at or before it (0 before the
    first sample: the player had not started)."""
    walls = [s["wall"] for s in samples]
    index = bisect.bisect_right(walls, wall) - 1
    return round(float(samples[index]["current_time"]), 2) if index >= 0 else 0.0


def _redirects(result: dict[str, Any]) -> dict[int, tuple[float, str, str]]:
    """segment -> (wall, rung, host:port of the target) of the latest group answer, each
    of which must be a 302 to the same segment of a rung of the group."""
    found: dict[int, tuple[float, str, str]] = {}
    for request in result["requests"]:
        match = GROUP_SEGMENT.search(urlsplit(request["url"]).path)
        if match is None:
            continue
        assert request["status"] == 302, request
        target = urlsplit(urljoin(request["url"], request["location"]))
        rung = RUNG_SEGMENT.search(target.path)
        assert rung is not None and not target.query, request  # a rung's own, shared URL
        assert int(rung.group(2)) == int(match.group(1)), request
        found[int(match.group(1))] = (request["wall"], rung.group(1), target.netloc)
    return found


def _switch_log(result: dict[str, Any], decisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The session's decisions, each with the playhead when the player asked for it and
    the throttling step then in force; the redirect the player got must name that rung."""
    redirects = _redirects(result)
    steps = result["steps"]
    log = []
    for decision in decisions:
        wall, rung, _ = redirects.get(decision["segment"], (None, None, None))
        if wall is not None and decision is _latest(decisions, decision["segment"]):
            assert rung == decision["rung"], (decision, rung)
        step = [s["name"] for s in steps if s["last_segment"] < decision["segment"]]
        log.append(
            {
                **decision,
                "player_time_s": None if wall is None else _playhead_at(result["samples"], wall),
                "step": step[-1] if step else None,
            }
        )
    return log


def _latest(decisions: list[dict[str, Any]], segment: int) -> dict[str, Any]:
    return [d for d in decisions if d["segment"] == segment][-1]


def _by_segment(decisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The latest decision of each segment, in segment order (a segment asked twice was
    decided twice; the player appended the second)."""
    latest = {d["segment"]: d for d in decisions}
    return [latest[n] for n in sorted(latest)]


def _switches(decisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The decisions whose rung differs from the one before (in segment order)."""
    ordered = _by_segment(decisions)
    return [d for before, d in itertools.pairwise(ordered) if d["rung"] != before["rung"]]


def _level_in(levels: list[list[Any]], span_s: tuple[float, float]) -> float | None:
    """The loudest level heard while the playhead was inside ``span_s`` (less margins)."""
    low, high = span_s[0] + LEVEL_MARGIN_S, span_s[1] - LEVEL_MARGIN_S
    heard = [rms for t, rms, paused in levels if low <= t <= high and not paused]
    return max(heard) if heard else None


def _assert_played(final: dict[str, Any], seconds: float) -> None:
    assert final["fatal"] is None, final["errors"]
    assert final["current_time"] >= seconds
    assert len(final["buffered"]) == 1, f"holes in the buffer: {final['buffered']}"
    assert final["rms_max"] > LEVEL_MIN_RMS, "silence"


def _summary_line(name: str, log: list[dict[str, Any]]) -> str:
    """``hls direct: 8 decisions: 64kx1 320kx7`` (runs of one rung, in decision order)."""
    rates = itertools.groupby(entry["bitrate_bps"] // 1000 for entry in log)
    runs = " ".join(f"{kbps}kx{len(list(run))}" for kbps, run in rates)
    return f"{name}: {len(log)} decisions: {runs}"


def _play(drive: Drive, served: Served, player: str, base: str, sid: str) -> dict[str, Any]:
    result = drive(
        player=player,
        src=_src(base, player, sid),
        play_s=PLAY_S,
        buffer_s=BUFFER_S,
        record_requests=True,
        timeout_s=40,
    )
    _assert_played(result["final"], PLAY_S)
    return result


def _check_redirected_playback(
    result: dict[str, Any], decisions: list[dict[str, Any]], served: Served, netloc: str
) -> None:
    """Every segment the player buffered was a 302 from ``netloc`` to a rung's segment
    on ``netloc`` (the one the session's decision names), which the browser fetched."""
    played = served.buffered_segments(result["final"])
    assert len(played) >= PLAY_S // SEGMENT_S, result["final"]["buffered"]
    redirects = _redirects(result)
    fetched = {
        (m.group(1), int(m.group(2)))
        for r in result["requests"]
        if r["status"] == 200
        and (m := RUNG_SEGMENT.search(urlsplit(r["url"]).path))
        and urlsplit(r["url"]).netloc == netloc
    }
    for number in played:
        assert number in redirects, f"segment {number} was never asked of the group"
        _, rung, target_netloc = redirects[number]
        assert target_netloc == netloc
        assert rung == _latest(decisions, number)["rung"]
        assert (rung, number) in fetched, f"{rung} segment {number} was not fetched"


@pytest.mark.parametrize("player", ["hls", "dash", "shaka"])
def test_player_plays_origin_decided_from_the_origin(
    drive: Drive, served: Served, player: str
) -> None:
    sid = f"od-direct-{player}"
    result = _play(drive, served, player, served.origin, sid)
    decisions = _decisions(served, sid)
    _check_redirected_playback(result, decisions, served, urlsplit(served.origin).netloc)
    log = _switch_log(result, decisions)
    RESULTS[f"origin-decided {player} direct"] = {
        "startup_s": result["final"]["startup_s"],
        "decisions": log,
    }
    print("\n" + _summary_line(f"{player} direct", log))


@pytest.mark.parametrize("player", ["hls", "dash", "shaka"])
def test_player_plays_origin_decided_through_the_edge(
    drive: Drive, served: Served, player: str
) -> None:
    sid = f"od-edge-{player}"
    assert served.edge is not None
    edge = served.edge.url
    result = _play(drive, served, player, edge, sid)
    decisions = _decisions(served, sid)
    _check_redirected_playback(result, decisions, served, urlsplit(edge).netloc)
    for request in result["requests"]:
        path = urlsplit(request["url"]).path
        if f"/{TRACK}/" in path:  # everything of the track, manifests included
            assert urlsplit(request["url"]).netloc == urlsplit(edge).netloc, request
        if GROUP_SEGMENT.search(path):
            assert request.get("cache") == "BYPASS", request  # decided per request, never stored
    # The rung segments the redirects named are the edge's shared objects, stored when the
    # player fetched them: fetched again now, each one the player buffered is a HIT.
    buffered = served.buffered_segments(result["final"])
    played = {(d["segment"], d["rung"]) for d in _by_segment(decisions) if d["segment"] in buffered}
    refetched = {}
    for number, rung in sorted(played):
        status, headers, _ = fetch(f"{edge}/{TRACK}/{rung}/seg-{number:05d}.m4s")
        assert status == 200
        refetched[f"{rung}/seg-{number:05d}"] = headers.get("X-Cache-Status")
    assert set(refetched.values()) == {"HIT"}, refetched
    # What the player itself got from the edge (earlier sessions may have stored them).
    seen = [
        str(r.get("cache"))
        for r in result["requests"]
        if RUNG_SEGMENT.search(urlsplit(r["url"]).path)
    ]
    by_status = {status: seen.count(status) for status in sorted(set(seen))}
    log = _switch_log(result, decisions)
    RESULTS[f"origin-decided {player} edge"] = {
        "startup_s": result["final"]["startup_s"],
        "decisions": log,
        "player_rung_fetches_by_cache_status": by_status,
        "refetched_after_the_run": refetched,
    }
    print(
        "\n" + _summary_line(f"{player} edge", log) + f"; the player's rung fetches: {by_status};"
        f" {len(refetched)} buffered rung segments fetched again: all HIT"
    )


def _between(
    decisions: list[dict[str, Any]], after: int, upto: int | None = None
) -> list[dict[str, Any]]:
    """The decisions of segments after ``after`` (up to ``upto``)."""
    return [d for d in decisions if after < d["segment"] <= (upto or d["segment"])]


def _throttle_summary(player: str, result: dict[str, Any], log: list[dict[str, Any]]) -> str:
    steps = " -> ".join(
        f"{s['name']}@{s['current_time']:.1f}s/seg>{s['last_segment']}" for s in result["steps"]
    )
    rows = [
        f"  seg {e['segment']:>2} {e['rung']:<9} {e['reason']:<13} "
        f"playhead {e['player_time_s']!s:>5} s  [{e['step']}]"
        for e in log
    ]
    return "\n".join([f"{player} throttled: {steps}", _summary_line(player, log), *rows])


def drive_throttled(drive: Drive, served: Served, player: str, sid: str) -> dict[str, Any]:
    """A run of ``player`` through :data:`THROTTLE_STEPS` on the origin's
    ``?abr=origin`` manifest, CMCD on, every request and the Web Audio level recorded."""
    return drive(
        player=player,
        src=_src(served.origin, player, sid),
        buffer_s=BUFFER_S,
        cmcd=True,
        session_id=sid,
        content_id=TRACK,
        throttle_steps=THROTTLE_STEPS,
        decisions_url=f"{served.origin}/v1/sessions/{sid}",
        record_requests=True,
        evaluate="window.cadenzaLevels",
        timeout_s=THROTTLE_TIMEOUT_S,
    )


def levels_after_switches(
    served: Served, decisions: list[dict[str, Any]], result: dict[str, Any]
) -> dict[int, float | None]:
    """segment -> the loudest level heard in each segment switched to (in segment
    order) that the playhead passed."""
    levels: list[list[Any]] = result["evaluated"]
    heard = {}
    for switch in _switches(decisions):
        span = served.segment_span_s(switch["segment"])
        if span[1] <= result["final"]["current_time"]:
            heard[switch["segment"]] = _level_in(levels, span)
    return heard


@pytest.mark.parametrize("player", ["hls", "dash", "shaka"])
def test_the_served_rung_follows_throttling_steps(
    drive: Drive, served: Served, player: str
) -> None:
    """2 Mb/s, then 150 kb/s once the origin serves a high rung, then 2 Mb/s again once it
    serves low ones (40 ms latency throughout; CMCD on, as docs/players.md configures the
    players): the origin's decisions go down within a few segments of the drop and up
    again after the recovery; playback never stops, never leaves a hole, never goes
    silent on a switch."""
    sid = f"od-throttle-{player}"
    result = drive_throttled(drive, served, player, sid)
    final = result["final"]
    log = _switch_log(result, _decisions(served, sid))
    decisions = _by_segment(log)
    heard = levels_after_switches(served, decisions, result)
    RESULTS[f"origin-decided {player} throttled"] = {
        "steps": result["steps"],
        "decisions": log,
        "level_after_switches": heard,
        "errors": final["errors"],
        "current_time": final["current_time"],
    }
    print("\n" + _throttle_summary(player, result, log))
    print(f"  level in each switched-to segment: {heard}")

    assert final["fatal"] is None, final["errors"]
    holes = [s for s in result["samples"] if len(s["buffered"]) > 1]
    assert not holes, f"holes in the buffer: {holes[:3]}"
    steps = {s["name"]: s for s in result["steps"]}
    # High before the drop: the slow step waited for two high decisions in a row.
    assert "slow" in steps, "the origin never served a high rung twice in a row on 2 Mb/s"
    slow = steps["slow"]["last_segment"]
    high_bps = next(d["bitrate_bps"] for d in decisions if d["segment"] == slow)
    assert high_bps >= HIGH_BPS
    # Lower within a bounded number of segments after the drop.
    lower = [d for d in _between(decisions, slow) if d["bitrate_bps"] < high_bps]
    assert lower, "the origin never served a lower rung after the drop"
    assert lower[0]["segment"] - slow <= DROP_WITHIN_SEGMENTS, lower[0]
    assert "fast-again" in steps, "the origin never served two low rungs in a row on 150 kb/s"
    fast = steps["fast-again"]["last_segment"]
    lowest_bps = min(d["bitrate_bps"] for d in _between(decisions, slow, fast))
    # Higher again after the recovery, within a bounded number of segments.
    higher = [d for d in _between(decisions, fast) if d["bitrate_bps"] > lowest_bps]
    assert higher, "the origin never served a higher rung after the recovery"
    assert higher[0]["segment"] - fast <= RECOVER_WITHIN_SEGMENTS, higher[0]
    assert "high-again" in steps, "the origin never served a high rung again on 2 Mb/s"
    assert "end" in steps, f"playback stopped at {final['current_time']:.1f} s"
    # Sound in every segment the origin switched to (every one the playhead passed),
    # switches on the slow link and after the recovery among them.
    assert any(slow < n <= fast for n in heard), heard
    assert any(n > fast for n in heard), heard
    quiet = {n: level for n, level in heard.items() if level is None or level < LEVEL_MIN_RMS}
    assert not quiet, f"no sound after these switches: {quiet}"
