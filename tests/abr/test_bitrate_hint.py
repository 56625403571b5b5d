"""The guidance's start and cap reach players in the unit they compare them with: the
manifests' advertised bandwidth (the measured peak), not the rung's nominal bitrate."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from cadenza.abr.guidance import bitrate_hint, guide_presentation, ladder_bps
from cadenza.abr.policy import Guidance, GuidanceSource
from cadenza.manifests.dash import render_mpd
from cadenza.manifests.jsonio import presentation_from_json
from cadenza.manifests.model import Codec, Presentation

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden" / "presentation.json"
NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}


def _presentation() -> Presentation:
    return presentation_from_json(GOLDEN.read_text(encoding="utf-8"))


def _guidance(ladder: list[int], start: int, cap: int, *, hint: bool = True) -> Guidance:
    return Guidance(
        start_index=start,
        start_bitrate_bps=ladder[start],
        max_index=cap,
        max_bitrate_bps=ladder[cap],
        estimate_bps=float(ladder[cap]),
        confidence=1.0,
        source=GuidanceSource.POPULATION,
        start_hint=hint,
    )


@pytest.mark.parametrize(("start", "cap"), [(0, 0), (1, 2), (2, 3), (3, 3), (0, 3)])
def test_dash_operating_bandwidth_keeps_the_allowed_rungs_and_names_the_start(
    start: int, cap: int
) -> None:
    """dash.js drops a Representation whose @bandwidth is above OperatingBandwidth@max and
    starts from the highest at or below @target: with the hint in peak units, every rung
    the cap allows stays and the start rung is the one it picks."""
    presentation = _presentation()
    ladder = ladder_bps(presentation)
    assert len(ladder) >= 4
    guidance = _guidance(ladder, start, cap)
    hint = bitrate_hint(presentation, guidance)
    assert hint is not None
    mpd = etree.fromstring(
        render_mpd(guide_presentation(presentation, guidance), hint=hint).encode()
    )
    operating = mpd.find(".//d:ServiceDescription/d:OperatingBandwidth", NS)
    assert operating is not None
    top = int(operating.get("max", "0"))
    target = int(operating.get("target", "0"))
    aac = [
        (int(rep.get("bandwidth", "0")), rep.get("id"))
        for rep in mpd.iterfind(".//d:Representation", NS)
        if (rep.get("codecs") or "").startswith("mp4a")
    ]
    assert aac, "no AAC representation"
    kept = [rid for bandwidth, rid in aac if bandwidth <= top]
    assert len(kept) == cap + 1 == len(aac)  # the cap's rungs, all of them, nothing dropped
    chosen = max((b, rid) for b, rid in aac if b <= target)
    expected = next(
        r.id
        for r in presentation.renditions
        if r.codec is Codec.AAC and r.target_bitrate_bps == ladder[start]
    )
    assert chosen[1] == expected


def test_no_hint_when_the_start_is_not_worth_hinting() -> None:
    presentation = _presentation()
    ladder = ladder_bps(presentation)
    assert bitrate_hint(presentation, _guidance(ladder, 1, 3, hint=False)) is None
