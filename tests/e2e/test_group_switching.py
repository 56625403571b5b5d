"""One init segment serves every rung of a switching group, proven in Chromium MSE.

For each switchable group of the e2e track (read from the presentation.json the origin
serves), ``page/mse_switch.js`` opens a MediaSource with the group's ``codecs``, appends
the group's one init segment once, then every media segment of the track from a
different rung each time (up the ladder and back down, through the real origin,
cross-origin), and plays the result from the start.  The judge here wants: no MSE or
decode error, exactly one buffered range after every append and it ends where that
segment ends on the shared timeline, the last end within a segment (plus priming) of
the track's duration, playback that advances to the end, and sound in every segment.

Two negative controls run through the same judge to show it catches breakage: a
segment of another group (Opus) in the AAC buffer leaves holes, and AAC segments after
a FLAC init fail to decode.
"""

from __future__ import annotations

import itertools
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest

from cadenza.manifests.groups import SwitchGroup
from cadenza.manifests.jsonio import presentation_from_json
from cadenza.manifests.model import Presentation, Rendition
from tests.e2e.conftest import ROOT, run_node_driver

pytestmark = pytest.mark.e2e
TRACK = "e2e-track"
DRIVER = ROOT / "tests" / "e2e" / "mse.mjs"
CASE_TIMEOUT_S = 40.0
# 4x, resampled: the whole 40 s track plays in about 10 s, so every rung is heard.
PLAYBACK_RATE = 4.0
TAIL_S = 0.5  # play to the duration less this: the last segment is a short tail
# One buffered range end vs. the shared timeline: Chromium reports microseconds.
END_TOLERANCE_S = 0.002
LEVEL_MIN_RMS = 0.02  # the synthesized chords peak near 0.2 in every segment
JUDGED_WINDOW_S = 1.0  # a segment is judged for sound when this much of it was played
NEGATIVE_PLAY_S = 7.5  # past the first segment boundary of the FLAC/AAC control


@dataclass(frozen=True, slots=True)
class Case:
    """One MediaSource run: the page's config plus what the judge expects of it."""

    name: str
    mime: str
    init_url: str
    segment_urls: tuple[str, ...]
    ends_s: tuple[float, ...]  # where the buffered range must end after each segment
    duration_s: float
    slack_s: float  # one segment plus priming: the last end's allowed distance
    play_s: float

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mime": self.mime,
            "init_url": self.init_url,
            "segment_urls": list(self.segment_urls),
            "play_s": self.play_s,
            "playback_rate": PLAYBACK_RATE,
        }


def ping_pong(count: int, rungs: int) -> list[int]:
    """Rung indices for ``count`` segments: up the ladder, back down, and again
    (0,1,2,3,2,1,0,1,...), so consecutive segments always come from different rungs."""
    if rungs < 2:
        raise ValueError("switching needs two rungs or more")
    cycle = [*range(rungs), *range(rungs - 2, 0, -1)]
    return [cycle[i % len(cycle)] for i in range(count)]


def _ends_s(rendition: Rendition) -> tuple[float, ...]:
    """Where each segment ends in presentation time: the edit list removes the priming."""
    return tuple(
        (s.start_ticks + s.duration_ticks - rendition.encoder_delay_ticks) / rendition.timescale
        for s in rendition.segments
    )


def _segment_url(base: str, rendition: Rendition, index: int) -> str:
    return f"{base}/{rendition.id}/{rendition.segment_name(rendition.segments[index])}"


def _mime(group: SwitchGroup) -> str:
    return f'audio/mp4; codecs="{group.codecs}"'


def switching_case(base: str, presentation: Presentation, group: SwitchGroup) -> Case:
    """Every segment of the track from a different rung of ``group``, after its one init."""
    rungs = [presentation.rendition(r) for r in group.rendition_ids]
    top = rungs[-1]
    timelines = {tuple((s.start_ticks, s.duration_ticks) for s in r.segments) for r in rungs}
    assert len(timelines) == 1, f"{group.id}: the rungs' segment timelines differ"
    pattern = ping_pong(len(top.segments), len(rungs))
    assert {*pattern} == set(range(len(rungs))), "the pattern must visit every rung"
    steps = list(itertools.pairwise(pattern))
    assert any(b > a for a, b in steps) and any(b < a for a, b in steps), "up and down"
    return Case(
        name=group.id,
        mime=_mime(group),
        init_url=f"{base}/{group.init_uri}",
        segment_urls=tuple(_segment_url(base, rungs[r], i) for i, r in enumerate(pattern)),
        ends_s=_ends_s(top),
        duration_s=top.duration_ticks / top.timescale,
        slack_s=(top.segments[0].duration_ticks + top.encoder_delay_ticks) / top.timescale,
        play_s=top.duration_ticks / top.timescale - TAIL_S,
    )


def judge(case: Case, report: dict[str, Any]) -> list[str]:
    """What is wrong with one run: an empty list when one init served every segment."""
    problems = [f"error: {e}" for e in report["errors"]]
    if report["media_error"] is not None:
        problems.append(f"media error {report['media_error']}")
    if not report["supported"]:
        problems.append(f"{case.mime} is not supported")
    appends = report["appends"]
    if len(appends) != 1 + len(case.segment_urls) or not all(a["ok"] for a in appends):
        problems.append(f"{sum(a['ok'] for a in appends)} of {1 + len(case.segment_urls)} appended")
    for number, (entry, end_s) in enumerate(zip(appends[1:], case.ends_s, strict=False), 1):
        ranges = entry["buffered"]
        if len(ranges) != 1:
            problems.append(f"after segment {number}: {len(ranges)} buffered ranges {ranges}")
        elif abs(ranges[0][0]) > END_TOLERANCE_S or abs(ranges[0][1] - end_s) > END_TOLERANCE_S:
            problems.append(f"after segment {number}: buffered {ranges}, not [0, {end_s:.6f}]")
    final = report["buffered"]
    if len(final) != 1:
        problems.append(f"{len(final)} buffered ranges at the end: {final}")
    elif abs(final[0][1] - case.duration_s) > case.slack_s:
        problems.append(f"buffered to {final[0][1]} s of a {case.duration_s} s track")
    if case.play_s > 0:
        problems += _judge_playback(case, report)
    return problems


def _judge_playback(case: Case, report: dict[str, Any]) -> list[str]:
    """Playback reached ``play_s``, and every segment it went through was audible."""
    played_s = float(report["played_to_s"])
    problems = [] if played_s >= case.play_s else [f"played to {played_s} s of {case.play_s}"]
    start_s = 0.0
    for number, end_s in enumerate(case.ends_s, 1):
        window = (start_s, min(end_s, played_s))
        start_s = end_s
        if window[1] - window[0] < JUDGED_WINDOW_S:
            continue
        levels = [p["rms"] for p in report["levels"] if window[0] <= p["t"] < window[1]]
        if not levels or max(levels) < LEVEL_MIN_RMS:
            problems.append(f"segment {number} ({window[0]:.2f}-{window[1]:.2f} s): {levels}")
    return problems


def run_cases(page: str, cases: list[Case]) -> dict[str, Any]:
    """All ``cases`` in one headless Chromium, through ``mse.mjs``."""
    config = {
        "page": page,
        "timeout_s": CASE_TIMEOUT_S,
        "cases": [case.config() for case in cases],
    }
    return run_node_driver(DRIVER, config, CASE_TIMEOUT_S * len(cases) + 60)


@dataclass(frozen=True, slots=True)
class Runs:
    cases: dict[str, Case]
    result: dict[str, Any]
    group_ids: tuple[str, ...]

    def problems(self, name: str) -> list[str]:
        return judge(self.cases[name], self.result["reports"][name])


NEGATIVE_FOREIGN_GROUP = "aac+opus-segment"
NEGATIVE_FLAC_INIT = "flac-init+aac"


def negative_cases(base: str, presentation: Presentation) -> list[Case]:
    """Breakage the judge must see: a segment of another group in the AAC buffer (segment
    2 from Opus), and AAC segments after a FLAC init (segment 2 from AAC)."""
    by_codec = {g.codec.value: g for g in presentation.groups}
    aac, opus, flac = by_codec["aac"], by_codec["opus"], by_codec["flac"]
    aac_low = presentation.rendition(aac.rendition_ids[0])
    opus_low = presentation.rendition(opus.rendition_ids[0])
    flac_only = presentation.rendition(flac.rendition_ids[0])
    foreign = switching_case(base, presentation, aac)
    mixed = (
        _segment_url(base, aac_low, 0),
        _segment_url(base, opus_low, 1),
        _segment_url(base, aac_low, 2),
    )
    after_flac = (_segment_url(base, flac_only, 0), _segment_url(base, aac_low, 1))
    return [
        Case(
            name=NEGATIVE_FOREIGN_GROUP,
            mime=foreign.mime,
            init_url=foreign.init_url,
            segment_urls=mixed,
            ends_s=foreign.ends_s[: len(mixed)],
            duration_s=foreign.ends_s[len(mixed) - 1],
            slack_s=foreign.slack_s,
            play_s=0.0,  # nothing to hear: the holes are the finding
        ),
        Case(
            name=NEGATIVE_FLAC_INIT,
            mime=_mime(flac),
            init_url=f"{base}/{flac.init_uri}",
            segment_urls=after_flac,
            ends_s=_ends_s(flac_only)[: len(after_flac)],
            duration_s=_ends_s(flac_only)[len(after_flac) - 1],
            slack_s=foreign.slack_s,
            play_s=NEGATIVE_PLAY_S,
        ),
    ]


@pytest.fixture(scope="module")
def runs(origin_url: str, page_url: str) -> Runs:
    base = f"{origin_url}/{TRACK}"
    with urllib.request.urlopen(f"{base}/presentation.json", timeout=10) as response:
        presentation = presentation_from_json(response.read())
    groups = tuple(g for g in presentation.groups if g.switchable)
    cases = [switching_case(base, presentation, g) for g in groups]
    cases += negative_cases(base, presentation)
    page = page_url.rsplit("/", 1)[0] + "/mse_switch.html"
    return Runs({c.name: c for c in cases}, run_cases(page, cases), tuple(g.id for g in groups))


def test_the_track_has_aac_and_opus_groups_to_switch_in(runs: Runs) -> None:
    assert {"aac", "opus"} <= set(runs.group_ids)
    assert all(len(runs.cases[g].segment_urls) > 4 for g in runs.group_ids)


@pytest.mark.parametrize("group_id", ["aac", "opus"])
def test_one_init_serves_every_rung_of_the_group(runs: Runs, group_id: str) -> None:
    problems = runs.problems(group_id)
    assert problems == [], "\n".join(problems)
    assert not [c for c in runs.result["console"] if c.startswith(f"{group_id}:")]


def test_a_segment_of_another_group_leaves_holes(runs: Runs) -> None:
    """Opus segment 2 (48 kHz ticks) read against the AAC init (44.1 kHz): the judge
    finds a second buffered range, so a rung that needs its own init cannot pass."""
    problems = runs.problems(NEGATIVE_FOREIGN_GROUP)
    assert any("buffered ranges" in p for p in problems), problems


def test_aac_after_a_flac_init_fails_to_decode(runs: Runs) -> None:
    """AAC bytes handed to the FLAC decoder: a decode error (MEDIA_ERR_DECODE, 3) once
    playback reaches segment 2, so the judge sees the error a wrong init causes."""
    report = runs.result["reports"][NEGATIVE_FLAC_INIT]
    assert str(report["media_error"]).startswith("3:"), report["media_error"]
    assert any(p.startswith("media error 3:") for p in runs.problems(NEGATIVE_FLAC_INIT))
    assert report["played_to_s"] < NEGATIVE_PLAY_S
